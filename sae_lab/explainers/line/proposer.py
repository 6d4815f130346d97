"""Concept proposals for LINE: the prompt, batched LLM proposals with retries and a fallback, and an offline
proposer that walks a vocabulary ranked by the latent's statistics and the scores seen so far.

Every latent of a batch proposes in the same ``TextBackend.generate`` call (one request per latent); answers
that cannot be used (no ``<answer>``, more than three words, a concept already tried) are asked again with the
reason, and after ``max_retries`` the offline proposer answers instead (marked ``fallback``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sae_lab.backends.text.base import ChatRequest, TextBackend
from sae_lab.backends.text.parse import parse_answer_tag
from sae_lab.data.world import PRIMITIVES, SYNONYMS, primitives_in_text
from sae_lab.explainers.line.pool import ScoredConcept

MAX_WORDS = 3
METRIC_HELP = {
    "auc": "AUC: how often its images activate the latent more than real images do (0.5 = no better, 1 = always)",
    "mad": "MAD: how many standard deviations its images activate the latent above real images",
    "mean": "mean activation of the latent on its images",
}
_THINKING = re.compile(r"<\s*thinking\s*>(.*?)(?:<\s*/\s*thinking\s*>|<\s*answer\s*>|$)", re.IGNORECASE | re.DOTALL)


def normalize_concept(text: str) -> str:
    """Lower case, single spaces, no surrounding quotes or punctuation."""
    return " ".join(text.lower().strip().strip("\"'“”‘’.,;:!").split())


@dataclass
class ProposalContext:
    """What a proposer knows about one latent at one iteration."""

    latent: int
    pool: list[ScoredConcept]
    """The pool, best first."""
    tried: list[str]
    """Concepts proposed so far, in order (the initial pool excluded)."""
    scored: dict[str, ScoredConcept]
    """Every concept scored for this latent (initial pool and proposals)."""
    class_profile: dict[str, float]
    """Mean ``z_max`` of the latent on each class's control images: the latent's statistics."""
    metric: str = "auc"


@dataclass
class Proposal:
    """One proposed concept with the reasoning behind it."""

    concept: str
    reasoning: str
    raw: str | None = None
    """The model's last answer (None for the offline proposer)."""
    attempts: int = 1
    """Requests sent (retries included); 0 for the offline proposer."""
    fallback: bool = False
    """True when the LLM gave no usable answer and the offline proposer answered."""
    errors: list[str] = field(default_factory=list)
    """Why earlier answers were rejected."""
    source: str = ""


# --------------------------------------------------------------------------------------------------- prompts
def system_prompt(domain: str, metric: str) -> str:
    return (
        f"You explain one latent (feature) of a sparse autoencoder trained on the internal activations of an image "
        f"classifier for {domain}. A text-to-image model draws images of every concept you propose, and the concept "
        f"gets a score: {METRIC_HELP[metric]}. Find the concept that activates the latent most: a short visual "
        "concept (an object, a shape, a part or a pattern) of 1 to 3 words."
    )


def _pool_lines(pool: Sequence[ScoredConcept]) -> str:
    return "\n".join(f"{item.concept}: {item.score:.3f}" for item in pool) or "(empty)"


def user_prompt(ctx: ProposalContext, summary: bool = False) -> str:
    fmt = (
        "Think step by step inside <thinking></thinking>, then give only the concept (1 to 3 words) inside "
        "<answer></answer>."
    )
    if summary:
        top = ctx.pool[:3]
        return (
            f"The three best concepts for this latent, with their scores:\n{_pool_lines(top)}\n\n"
            "Propose one concept that sums up what they have in common and that should score at least as high as "
            f"the best of them. It may be one of them. {fmt}"
        )
    tried = ", ".join(ctx.tried) if ctx.tried else "(none yet)"
    return (
        f"Concepts scored so far (concept: score, best first):\n{_pool_lines(ctx.pool)}\n\n"
        f"Concepts you already proposed: {tried}\n\n"
        "Propose one new concept that should score higher than the best one above. Do not repeat a concept listed "
        f"above. {fmt}"
    )


def build_messages(ctx: ProposalContext, summary: bool = False, domain: str = "hand-drawn sketches") -> list[dict]:
    """The chat of one proposal request."""
    return [
        {"role": "system", "content": system_prompt(domain, ctx.metric)},
        {"role": "user", "content": user_prompt(ctx, summary)},
    ]


def parse_proposal(text: str | None) -> tuple[str | None, str]:
    """``(concept, reasoning)`` from ``<thinking>…</thinking><answer>…</answer>``; concept None when unusable.

    The reasoning is the ``<thinking>`` text, else whatever precedes ``<answer>``.
    """
    if not text:
        return None, ""
    concept = parse_answer_tag(text, max_words=MAX_WORDS)
    found = _THINKING.search(text)
    reasoning = found.group(1) if found else re.split(r"<\s*answer\s*>", text, flags=re.IGNORECASE)[0]
    reasoning = " ".join(re.sub(r"<\s*/?\s*[a-z_]+\s*>", " ", reasoning, flags=re.IGNORECASE).split())
    concept = normalize_concept(concept) if concept else None
    return concept or None, reasoning


def check_concept(concept: str | None, ctx: ProposalContext, summary: bool) -> str | None:
    """Why ``concept`` cannot be used (None when it can)."""
    if concept is None:
        return "no concept of 1 to 3 words inside <answer></answer>"
    if not summary and (concept in ctx.scored or concept in ctx.tried):
        return f"'{concept}' was already scored; propose a concept that is not listed"
    return None


# --------------------------------------------------------------------------------------------------- offline
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


# --------------------------------------------------------------------------------------------------- LLM
def request_seed(seed: int, iteration: int, attempt: int) -> int:
    """One sampling seed per (iteration, attempt), shared by all latents so a backend can batch their requests."""
    digest = hashlib.sha256(json.dumps([seed, iteration, attempt]).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class LLMProposer:
    """Proposals from a :class:`~sae_lab.backends.text.base.TextBackend`, all latents in one batched call per attempt.

    Args:
        backend: The text backend.
        fallback: Answers for a latent whose answers stayed unusable after ``max_retries`` retries.
        max_retries: Re-asks per latent and iteration (with the reason the last answer was rejected).
        temperature: Sampling temperature (0: greedy).
        max_new_tokens: Generation budget per answer (thinking included).
        seed: Sampling seed base.
        domain: What the classifier sees, for the system prompt.
    """

    def __init__(
        self,
        backend: TextBackend,
        fallback: OfflineProposer,
        max_retries: int = 2,
        temperature: float = 0.7,
        max_new_tokens: int = 256,
        seed: int = 0,
        domain: str = "hand-drawn sketches",
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.backend, self.fallback = backend, fallback
        self.max_retries, self.temperature, self.max_new_tokens = max_retries, temperature, max_new_tokens
        self.seed, self.domain = seed, domain
        self.name = backend.name

    def propose(self, contexts: Sequence[ProposalContext], iteration: int, summary: bool = False) -> list[Proposal]:
        chats = [build_messages(ctx, summary, self.domain) for ctx in contexts]
        out: list[Proposal | None] = [None] * len(contexts)
        errors: list[list[str]] = [[] for _ in contexts]
        raw: list[str | None] = [None] * len(contexts)
        pending = list(range(len(contexts)))
        for attempt in range(self.max_retries + 1):
            if not pending:
                break
            seed = request_seed(self.seed, iteration, attempt)
            requests = [ChatRequest(chats[i], max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                    seed=seed) for i in pending]  # fmt: skip
            results = self.backend.generate(requests)
            still = []
            for i, result in zip(pending, results):
                raw[i] = result.text
                concept, reasoning = parse_proposal(result.text)
                problem = result.error if not result.ok else check_concept(concept, contexts[i], summary)
                if problem is None:
                    out[i] = Proposal(concept, reasoning, result.text, attempt + 1, errors=errors[i], source=self.name)
                    continue
                errors[i].append(problem)
                if result.ok:
                    chats[i] = chats[i] + [
                        {"role": "assistant", "content": result.text or ""},
                        {"role": "user", "content": f"That answer cannot be used: {problem}. Answer again in the "
                                                    "format <thinking>…</thinking><answer>concept</answer>."},
                    ]  # fmt: skip
                still.append(i)
            pending = still
        for i in pending:
            fb = self.fallback.propose_one(contexts[i], summary)
            fb.raw, fb.attempts, fb.fallback, fb.errors = raw[i], self.max_retries + 1, True, errors[i]
            out[i] = fb
        return out  # type: ignore[return-value]
