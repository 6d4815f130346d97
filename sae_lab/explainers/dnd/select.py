"""DnD's best-concept selection (Bai et al., "Step 3"; the reference's ``scoring_function.py``), for one latent.

Every candidate concept has generated images; all of them are ranked together by the latent's activation.

- **Rank score** of a candidate: the mean of the squared ranks of its best ``beta`` images (ranks count from 0, the
  most activating image of all; lower is better). Candidates are ordered by it, ascending: ``position`` 0 is best.
- **Similarity weight**: the mean image-embedding similarity between the latent's top images (what it was
  described from) and the candidate's images that land in the joint top ``top_k``; −1 when none does.
- **Final score** = (L − position) × weight, with L the number of candidates; the largest wins.

Ties are broken by candidate order everywhere (the reference breaks them by its label ids), so a result never
depends on sort internals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

NO_HITS_WEIGHT = -1.0
"""The weight of a candidate none of whose images is among the joint top ``top_k``."""


class Ranking(NamedTuple):
    """All candidates' images of one latent ranked together."""

    ranks: list[list[int]]
    """Per candidate, the joint ranks of its images (0 = most activating of all), ascending."""
    rank_scores: list[float | None]
    """Per candidate, the mean squared rank of its best ``beta`` images; None without images."""
    positions: list[int]
    """Per candidate, its place in the rank-score order (0 = lowest rank score; candidates without images last)."""
    hits: list[list[int]]
    """Per candidate, the indices (into its own images) of those among the joint top ``top_k``, best first."""


class CandidateScore(NamedTuple):
    """One candidate's scores."""

    concept: str
    score: float
    """The final score, (L − position) × weight."""
    rank_score: float | None
    position: int
    weight: float
    n_images: int
    top_hits: int
    """Its images among the joint top ``top_k``."""

    def to_json(self) -> dict:
        return self._asdict()


def rank_candidates(acts: Sequence[Sequence[float]], beta: int = 5, top_k: int = 10) -> Ranking:
    """Ranks every candidate's images together.

    Args:
        acts: ``acts[c][j]``: the latent's activation on image ``j`` of candidate ``c`` (any length, even 0).
        beta: Images per candidate in the rank score.
        top_k: Size of the joint top that the similarity weight reads.

    Raises:
        ValueError: ``beta`` or ``top_k`` < 1, or a non-finite activation.
    """
    if beta < 1 or top_k < 1:
        raise ValueError(f"beta and top_k must be >= 1, got {beta}, {top_k}")
    pool = [(float(a), c, j) for c, values in enumerate(acts) for j, a in enumerate(values)]
    if any(not math.isfinite(a) for a, _, _ in pool):
        raise ValueError("activations must be finite")
    pool.sort(key=lambda t: (-t[0], t[1], t[2]))
    ranks: list[list[int]] = [[] for _ in acts]
    hits: list[list[int]] = [[] for _ in acts]
    for r, (_, c, j) in enumerate(pool):
        ranks[c].append(r)
        if r < top_k:
            hits[c].append(j)
    scores = [sum(r * r for r in rs[:beta]) / min(beta, len(rs)) if rs else None for rs in ranks]
    order = sorted(range(len(acts)), key=lambda c: (scores[c] is None, scores[c] or 0.0, c))
    positions = [0] * len(acts)
    for p, c in enumerate(order):
        positions[c] = p
    return Ranking(ranks, scores, positions, hits)


def final_scores(positions: Sequence[int], weights: Sequence[float]) -> list[float]:
    """(L − position) × weight per candidate, L = the number of candidates."""
    n = len(positions)
    return [(n - p) * float(w) for p, w in zip(positions, weights)]


def choose(concepts: Sequence[str], ranking: Ranking, weights: Sequence[float], keep: int = 3) -> list[CandidateScore]:
    """The candidates by final score, best first (ties: the better rank score), the first ``keep`` of them.

    Args:
        concepts: The L candidate concepts.
        ranking: Their images ranked together (:func:`rank_candidates`).
        weights: Their similarity weights (:data:`NO_HITS_WEIGHT` for a candidate without top images).
        keep: How many to return (all when it exceeds L).
    """
    if not len(concepts) == len(ranking.ranks) == len(weights):
        raise ValueError(f"{len(concepts)} concepts, {len(ranking.ranks)} rankings and {len(weights)} weights")
    finals = final_scores(ranking.positions, weights)
    out = [CandidateScore(concepts[c], finals[c], ranking.rank_scores[c], ranking.positions[c], float(weights[c]),
                          len(ranking.ranks[c]), len(ranking.hits[c])) for c in range(len(concepts))]  # fmt: skip
    out.sort(key=lambda s: (-s.score, s.position))
    return out[:keep]


__all__ = ["NO_HITS_WEIGHT", "CandidateScore", "Ranking", "choose", "final_scores", "rank_candidates"]
