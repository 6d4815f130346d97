"""LINE for SAE latents: an LLM proposes concepts, a text-to-image model draws them, the latent scores them.

Many latents run together: one batched LLM call per iteration, each concept's images generated once (cached on
disk) for every latent that proposes it, and every batch of images scored for all latents at once. Runs are
resumable. Entry points: :func:`explain` (``python -m sae_lab explain``) and :func:`run_line_stage` (quickstart).
"""

from sae_lab.backends.image.imagegen import (
    DiffusersBackend,
    ImageBackend,
    ImageCache,
    RendererBackend,
    ReplicateImageBackend,
    image_seed,
    make_image_backend,
)
from sae_lab.explainers.line.loop import (
    LineConfig,
    LineSession,
    choose_latents,
    explain,
    gt_named_rate,
    parse_latents,
    resolve_sae_dir,
    run_line_stage,
)
from sae_lab.explainers.line.pool import Pool, ScoredConcept
from sae_lab.explainers.line.proposer import LLMProposer, OfflineProposer, Proposal, ProposalContext, parse_proposal
from sae_lab.explainers.line.scoring import ConceptScores, ControlSet, LatentScorer, concept_scores

__all__ = [
    "ConceptScores",
    "ControlSet",
    "DiffusersBackend",
    "ImageBackend",
    "ImageCache",
    "LLMProposer",
    "LatentScorer",
    "LineConfig",
    "LineSession",
    "OfflineProposer",
    "Pool",
    "Proposal",
    "ProposalContext",
    "RendererBackend",
    "ReplicateImageBackend",
    "ScoredConcept",
    "choose_latents",
    "concept_scores",
    "explain",
    "gt_named_rate",
    "image_seed",
    "make_image_backend",
    "parse_latents",
    "parse_proposal",
    "resolve_sae_dir",
    "run_line_stage",
]
