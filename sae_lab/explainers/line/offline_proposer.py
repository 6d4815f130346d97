"""The offline LINE proposer: walks a vocabulary ranked by the latent's statistics and the scores seen so far.

It needs no model, so it answers in tests and the quickstart, and stands in for an LLM whose answers stay unusable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sae_lab.data.world import PRIMITIVES, SYNONYMS, primitives_in_text
from sae_lab.explainers.line.proposal import MAX_WORDS, Proposal, ProposalContext, normalize_concept


def default_vocabulary(class_names: Sequence[str]) -> list[str]:
    """Sketch-world primitive names, their synonyms (≤ 3 words), then the class names; no duplicates."""
    words = []
    for p in PRIMITIVES:
        words += [p, *SYNONYMS.get(p, ())]
    words += list(class_names)
    out = []
    for w in words:
        w = normalize_concept(w)
        if w and len(w.split()) <= MAX_WORDS and w not in out:
            out.append(w)
    return out


def _z(x: np.ndarray) -> np.ndarray:
    std = x.std()
    return (x - x.mean()) / std if std > 1e-12 else np.zeros_like(x)


def _contrast(values: np.ndarray, members: list[frozenset[str]], prims: Sequence[str]) -> np.ndarray:
    """For each primitive: mean of ``values`` over members containing it minus the mean over the others."""
    out = np.zeros(len(prims))
    for j, p in enumerate(prims):
        has = np.array([p in m for m in members])
        if has.any() and (~has).any():
            out[j] = values[has].mean() - values[~has].mean()
    return out


class OfflineProposer:
    """A model-free proposer: ranks a vocabulary by the latent's statistics and the scores so far.

    Each candidate maps to the sketch-world primitives it names (``primitives_in_text``: names, synonyms and class
    names). A primitive's belief is the z-scored contrast of the latent's class profile between classes that
    contain it and those that do not, plus (``feedback``) the same contrast over the scores of the concepts tried
    so far. A candidate's value is the mean belief of its primitives, minus ``specificity`` per extra primitive
    and ``repeat`` per already scored concept with the same primitives; a candidate that names no primitive but is
    a class name is valued by the class's own activation (minus one). The next proposal is the untried candidate
    of highest value (ties: vocabulary order), so it is deterministic. The summary proposal is the best untried
    name of the primitive the pool's top 3 share most, else the pool's best concept.

    Args:
        class_names: The classifier's classes (part of the vocabulary).
        vocabulary: Candidates; None for :func:`default_vocabulary`.
        feedback: Weight of the evidence from scores seen so far.
        specificity: Penalty per extra primitive named (prefers a single part over a whole class).
        repeat: Penalty per scored concept naming the same primitives (makes the walk explore).
    """

    name = "offline:vocabulary"

    def __init__(
        self,
        class_names: Sequence[str],
        vocabulary: Sequence[str] | None = None,
        feedback: float = 1.0,
        specificity: float = 0.5,
        repeat: float = 0.25,
    ) -> None:
        self.class_names = [normalize_concept(c) for c in class_names]
        self.vocabulary = list(vocabulary) if vocabulary is not None else default_vocabulary(class_names)
        self.parts = {c: frozenset(primitives_in_text(c)) for c in [*self.vocabulary, *self.class_names]}
        self.feedback, self.specificity, self.repeat = feedback, specificity, repeat

    def _parts(self, concept: str) -> frozenset[str]:
        if concept not in self.parts:
            self.parts[concept] = frozenset(primitives_in_text(concept))
        return self.parts[concept]

    def beliefs(self, ctx: ProposalContext) -> dict[str, float]:
        """Belief per primitive: class-profile contrast plus score contrast, both z-scored."""
        names = [c for c in self.class_names if c in ctx.class_profile]
        profile = np.array([ctx.class_profile[c] for c in names], dtype=np.float64)
        prior = _z(_contrast(_z(profile), [self._parts(c) for c in names], PRIMITIVES)) if names else 0.0
        scored = [s for s in ctx.scored.values() if self._parts(s.concept) and np.isfinite(s.rank_key[0])]
        evidence = np.zeros(len(PRIMITIVES))
        if len(scored) > 1:
            values = _z(np.array([s.rank_key[0] for s in scored]))
            evidence = _z(_contrast(values, [self._parts(s.concept) for s in scored], PRIMITIVES))
        belief = prior + self.feedback * evidence
        return {p: float(b) for p, b in zip(PRIMITIVES, np.broadcast_to(belief, (len(PRIMITIVES),)))}

    def values(self, ctx: ProposalContext) -> dict[str, float]:
        """Value of every untried vocabulary candidate."""
        belief = self.beliefs(ctx)
        profile_names = [c for c in self.class_names if c in ctx.class_profile]
        class_z = dict(zip(profile_names, _z(np.array([ctx.class_profile[c] for c in profile_names], float))))
        seen = [self._parts(c) for c in ctx.scored]
        out = {}
        for cand in self.vocabulary:
            if cand in ctx.scored or cand in ctx.tried:
                continue
            parts = self._parts(cand)
            if parts:
                value = float(np.mean([belief[p] for p in parts])) - self.specificity * (len(parts) - 1)
                out[cand] = value - self.repeat * sum(s == parts for s in seen)
            elif cand in class_z:
                out[cand] = float(class_z[cand]) - 1.0
        return out

    def propose_one(self, ctx: ProposalContext, summary: bool = False) -> Proposal:
        values = self.values(ctx)
        belief = self.beliefs(ctx)
        ranked = sorted(belief.items(), key=lambda kv: -kv[1])[:4]
        why = "primitive beliefs " + ", ".join(f"{p} {b:+.2f}" for p, b in ranked)
        if summary:
            return self._summary(ctx, values, belief, why)
        if not values:
            best = ctx.pool[0].concept if ctx.pool else self.vocabulary[0]
            return Proposal(best, f"offline: vocabulary exhausted; repeating {best!r}", attempts=0, source=self.name)
        concept = max(values, key=values.__getitem__)  # first maximum: vocabulary order breaks ties
        return Proposal(concept, f"offline: {why}; best untried candidate {concept!r} (value {values[concept]:+.2f})",
                        attempts=0, source=self.name)  # fmt: skip

    def _summary(self, ctx: ProposalContext, values: dict, belief: dict, why: str) -> Proposal:
        top = ctx.pool[:3]
        weight: dict[str, float] = {}
        for rank, item in enumerate(top):
            for p in self._parts(item.concept):
                weight[p] = weight.get(p, 0.0) + (len(top) - rank)
        if weight:
            shared = max(weight, key=lambda p: (weight[p], belief.get(p, 0.0)))
            names = [c for c in values if self._parts(c) == {shared}]
            if names:
                concept = max(names, key=values.__getitem__)
                return Proposal(concept, f"offline summary: the top {len(top)} share {shared!r}; {why}",
                                attempts=0, source=self.name)  # fmt: skip
        best = top[0].concept if top else self.vocabulary[0]
        return Proposal(best, f"offline summary: keeping the best concept {best!r}", attempts=0, source=self.name)

    def propose(self, contexts: Sequence[ProposalContext], iteration: int, summary: bool = False) -> list[Proposal]:
        return [self.propose_one(ctx, summary) for ctx in contexts]
