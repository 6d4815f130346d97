"""Proposal contexts for the proposer tests: scored concepts and a latent whose statistics point at a primitive."""

from sae_lab.data.world import CLASSES
from sae_lab.explainers.line.pool import ScoredConcept
from sae_lab.explainers.line.proposal import ProposalContext

CLASS_NAMES = list(CLASSES)


def scored(concept, score, it=0):
    return ScoredConcept(concept, score, score, 0.0, score, it, 8)


def context(latent=0, profile=None, scored_items=(), tried=()) -> ProposalContext:
    """A latent that fires on classes with a circle unless another profile is given."""
    profile = profile or {c: (3.0 if "circle" in CLASSES[c] else 0.5) for c in CLASS_NAMES}
    items = {s.concept: s for s in scored_items}
    pool = sorted(items.values(), key=lambda s: s.rank_key, reverse=True)
    return ProposalContext(latent, pool, list(tried), items, profile)
