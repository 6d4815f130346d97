"""The LINE concept pool: the best concepts seen so far for one latent, and its update rule."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

POOL_SIZE = 10


@dataclass(frozen=True)
class ScoredConcept:
    """A concept with its scores for one latent (its images' ``z_max`` against the control images)."""

    concept: str
    """The concept (1–3 words, lower case)."""
    score: float
    """The configured metric (AUC by default); what the pool ranks by."""
    auc: float
    """ROC-AUC of the concept images' ``z_max`` against the control images."""
    mad: float
    """(mean_pos − mean_ctrl) / std_ctrl."""
    mean: float
    """Mean ``z_max`` over the concept images; breaks ties of ``score`` (an AUC saturates at 1)."""
    iteration: int
    """Iteration at which it was first scored (0: the initial pool)."""
    n_images: int = 0
    """Images the scores are computed on."""

    @property
    def rank_key(self) -> tuple[float, float]:
        """Sort key, higher is better: the score, then the mean activation; NaN ranks last."""
        return (_finite_or_low(self.score), _finite_or_low(self.mean))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoredConcept:
        values = dict(d)
        for key in ("score", "auc", "mad", "mean"):
            if values.get(key) is None:  # JSON has no NaN; it was written as null
                values[key] = math.nan
        return cls(**values)


def _finite_or_low(x: float) -> float:
    return -math.inf if x is None or math.isnan(x) else x


class Pool:
    """At most ``capacity`` scored concepts for one latent.

    Update rule (DESIGN.md, "LINE for SAE latents"): a new concept enters the pool. When the pool is full, a new
    concept that is better than the worst member evicts the worst; otherwise it evicts a random member other than
    the best, drawn with weight ``exp(−(s_j − s_new) / τ)`` (τ the spread of the pool's scores): members whose
    score is close to the newcomer's are likely to go, far better ones rarely, the best never. So the pool keeps
    exploring while its argmax is always the best concept seen so far.

    Args:
        capacity: Pool size (10 in LINE).
        items: Initial members.
    """

    def __init__(self, capacity: int = POOL_SIZE, items: Iterable[ScoredConcept] = ()) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.items: list[ScoredConcept] = []
        for item in items:
            if len(self.items) < capacity and item.concept not in self:
                self.items.append(item)

    def __contains__(self, concept: str) -> bool:
        return any(item.concept == concept for item in self.items)

    def __len__(self) -> int:
        return len(self.items)

    def sorted(self) -> list[ScoredConcept]:
        """Members, best first (ties keep insertion order)."""
        return sorted(self.items, key=lambda item: item.rank_key, reverse=True)

    def best(self) -> ScoredConcept | None:
        return self.sorted()[0] if self.items else None

    def top(self, k: int) -> list[ScoredConcept]:
        return self.sorted()[:k]

    def eviction_weights(self, new: ScoredConcept) -> np.ndarray:
        """Probability of evicting each member (in ``items`` order) for a newcomer no better than the worst."""
        scores = np.array([item.rank_key[0] for item in self.items], dtype=np.float64)
        finite = np.isfinite(scores)
        new_score = new.rank_key[0] if math.isfinite(new.rank_key[0]) else np.min(scores[finite], initial=0.0)
        spread = float(np.std(scores[finite])) if finite.sum() > 1 else 0.0
        tau = spread if spread > 1e-9 else 1.0
        gaps = np.where(finite, scores - new_score, 0.0)
        weights = np.exp(-np.clip(gaps, 0.0, None) / tau)
        best = self.items.index(self.best())
        weights[best] = 0.0
        total = weights.sum()
        if total <= 0:  # a pool of one: only the best, which stays
            return weights
        return weights / total

    def update(self, new: ScoredConcept, rng: np.random.Generator) -> ScoredConcept | None:
        """Adds ``new`` by the rule above; returns the evicted member (None when nothing was evicted).

        A concept already in the pool is left alone (its first score stands).
        """
        if new.concept in self:
            return None
        if len(self.items) < self.capacity:
            self.items.append(new)
            return None
        worst = min(range(len(self.items)), key=lambda j: self.items[j].rank_key)
        if new.rank_key > self.items[worst].rank_key:
            evicted = self.items.pop(worst)
        else:
            weights = self.eviction_weights(new)
            if weights.sum() <= 0:
                return None  # capacity 1: the newcomer is worse than the only (best) member
            evicted = self.items.pop(int(rng.choice(len(self.items), p=weights)))
        self.items.append(new)
        return evicted

    def to_list(self) -> list[dict[str, Any]]:
        return [item.to_dict() for item in self.items]

    @classmethod
    def from_list(cls, rows: list[dict[str, Any]], capacity: int = POOL_SIZE) -> Pool:
        return cls(capacity, [ScoredConcept.from_dict(r) for r in rows])
