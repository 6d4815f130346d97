"""LLM concept proposals for LINE: the prompt, the answer parser and :class:`LLMProposer`.

Every latent of a batch proposes in the same ``TextBackend.generate`` call (one request per latent) through
:func:`~sae_lab.backends.text.ask.ask_until_parsed`; answers that cannot be used (no ``<answer>``, more than three
words, a concept already tried) and failed requests are asked again, with the reason, and after ``max_retries`` the
:class:`~sae_lab.explainers.line.offline_proposer.OfflineProposer` answers instead (marked ``fallback``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence

from sae_lab.backends.text.ask import ask_until_parsed
from sae_lab.backends.text.base import ChatRequest, TextBackend
from sae_lab.backends.text.parse import parse_answer_tag
from sae_lab.explainers.line.offline_proposer import OfflineProposer
from sae_lab.explainers.line.pool import ScoredConcept
from sae_lab.explainers.line.proposal import MAX_WORDS, Proposal, ProposalContext, normalize_concept

METRIC_HELP = {
    "auc": "AUC: how often its images activate the latent more than real images do (0.5 = no better, 1 = always)",
    "mad": "MAD: how many standard deviations its images activate the latent above real images",
    "mean": "mean activation of the latent on its images",
}
_THINKING = re.compile(r"<\s*thinking\s*>(.*?)(?:<\s*/\s*thinking\s*>|<\s*answer\s*>|$)", re.IGNORECASE | re.DOTALL)
RETRY_REMINDER = (
    "That answer cannot be used: {}. Answer again in the format <thinking>…</thinking><answer>concept</answer>."
)
"""The user turn after a rejected answer; ``{}`` is the reason."""


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
        """One proposal per context: one batched request per round for every latent still pending, each round
        sampled with :func:`request_seed` of (iteration, round); the offline fallback for what stays unusable."""

        def parse(text: str | None, i: int) -> tuple[tuple[str, str] | None, str | None]:
            concept, reasoning = parse_proposal(text)
            problem = check_concept(concept, contexts[i], summary)
            return (None, problem) if problem is not None else ((concept, reasoning), None)

        def request(i: int, messages: list[dict], round_: int) -> ChatRequest:
            seed = request_seed(self.seed, iteration, round_)
            return ChatRequest(messages, max_new_tokens=self.max_new_tokens, temperature=self.temperature, seed=seed)

        chats = [build_messages(ctx, summary, self.domain) for ctx in contexts]
        answers = ask_until_parsed(
            self.backend, chats, parse, request, RETRY_REMINDER.format, self.max_retries, retry_failed_requests=True
        )
        out = []
        for ctx, asked in zip(contexts, answers):
            if asked.ok:
                concept, reasoning = asked.value
                out.append(
                    Proposal(concept, reasoning, asked.text, asked.rounds, errors=asked.errors, source=self.name)
                )
                continue
            fb = self.fallback.propose_one(ctx, summary)
            fb.raw, fb.attempts, fb.fallback, fb.errors = asked.text, self.max_retries + 1, True, asked.errors
            out.append(fb)
        return out
