"""Patch explanations (Zhao et al., "Automated Natural Language Explanation of Deep Visual Neurons with Large
Models", arXiv 2310.10708; no public code, DESIGN.md gives our reading).

For each latent's top probe images, occlusion finds the patch whose covering lowers the latent most; an LLM gives
a vocabulary of short phrases per class; a perception backend scores every phrase in every patch, and the phrase
with the highest mean presence over the latent's patches is its explanation, backed by the per-class accuracy
drop of zeroing the latent. ``python -m sae_lab explain patches`` → ``explanations/patches.jsonl`` and
``reports/<run>/patches/<latent>/`` (occlusion maps and patches). Occlusion is shared across latents
(:mod:`.occlusion`): an image's occluded variants run once and serve every latent that has it among its top images.
"""

from sae_lab.explainers.base import Explainer
from sae_lab.explainers.patches.ablation import ablation_drops, top_drops
from sae_lab.explainers.patches.explain import ChunkInputs, explain_chunk, rank_phrases
from sae_lab.explainers.patches.occlusion import Occlusion, SaeScorer, occlude, patch_box, pixel_map, positions
from sae_lab.explainers.patches.runner import METHOD, NEVER_FIRES, run, run_patches, summary_block
from sae_lab.explainers.patches.settings import PROMPT, PatchSettings
from sae_lab.explainers.patches.vocabulary import class_vocabularies, offline_vocabulary, parse_phrases

EXPLAINER = Explainer(
    name="patches",
    help="Patch explanations: occlusion patches of each latent's top images named with an LLM vocabulary and a "
    "perception backend, backed by ablation → explanations/patches.jsonl",
    settings=PatchSettings,
    run=run,
    methods=(METHOD,),
)

__all__ = [
    "EXPLAINER",
    "METHOD",
    "NEVER_FIRES",
    "PROMPT",
    "ChunkInputs",
    "Occlusion",
    "PatchSettings",
    "SaeScorer",
    "ablation_drops",
    "class_vocabularies",
    "explain_chunk",
    "occlude",
    "offline_vocabulary",
    "parse_phrases",
    "patch_box",
    "pixel_map",
    "positions",
    "rank_phrases",
    "run",
    "run_patches",
    "summary_block",
    "top_drops",
]
