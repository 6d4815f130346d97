"""LINE for SAE latents: an LLM proposes concepts, a text-to-image model draws them, the latent scores them.

Many latents run together: one batched LLM call per iteration, each concept's images generated once (cached on
disk) for every latent that proposes it, and every batch of images scored for all latents at once. Runs are
resumable. Entry points: ``EXPLAINER`` (``python -m sae_lab explain line``), :func:`explain` and
:func:`run_line_stage` (quickstart).
"""

from sae_lab.explainers.base import Explainer, parse_latents
from sae_lab.explainers.line.config import SKETCH_TEMPLATE, LineConfig, LineSettings
from sae_lab.explainers.line.loop import LineSession
from sae_lab.explainers.line.offline_proposer import OfflineProposer
from sae_lab.explainers.line.pool import Pool, ScoredConcept
from sae_lab.explainers.line.proposal import Proposal, ProposalContext
from sae_lab.explainers.line.proposer import LLMProposer, parse_proposal
from sae_lab.explainers.line.scoring import ConceptScores, ControlSet, LatentScorer, concept_scores
from sae_lab.explainers.line.stage import choose_latents, explain, gt_named_rate, run, run_line_stage

EXPLAINER = Explainer(
    name="line",
    help="LINE: LLM ⇄ text-to-image loop naming SAE latents, batched and resumable → explanations/line.jsonl, line/",
    settings=LineSettings,
    run=run,
    methods=("line",),
)

__all__ = [
    "EXPLAINER",
    "SKETCH_TEMPLATE",
    "ConceptScores",
    "ControlSet",
    "LLMProposer",
    "LatentScorer",
    "LineConfig",
    "LineSession",
    "LineSettings",
    "OfflineProposer",
    "Pool",
    "Proposal",
    "ProposalContext",
    "ScoredConcept",
    "choose_latents",
    "concept_scores",
    "explain",
    "gt_named_rate",
    "parse_latents",
    "parse_proposal",
    "run_line_stage",
]
