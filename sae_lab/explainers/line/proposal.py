"""What every LINE proposer reads and returns: the context of one latent at one iteration and a proposal."""

from __future__ import annotations

from dataclasses import dataclass, field

from sae_lab.explainers.line.pool import ScoredConcept

MAX_WORDS = 3
"""Longest concept accepted, in words."""


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
    """Who proposed it: the text backend's name, or the offline proposer's."""
