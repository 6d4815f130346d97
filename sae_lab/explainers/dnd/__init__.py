"""Describe-and-Dissect (Bai et al., TMLR 2025) for SAE latents: attention crops of each latent's top images,
captions, LLM summaries into candidate concepts, and the candidate whose generated images activate the latent best.

Many latents run together with every step's work shared (:mod:`.engine`): crops scored in one pass for all latents,
an image captioned once, all summaries in one batched LLM call per round, a concept's images generated once (the
LINE image cache) and scored for every latent that proposed it. ``python -m sae_lab explain dnd`` →
``explanations/dnd.jsonl`` and ``reports/<run>/dnd/<latent>/``.
"""

from sae_lab.explainers.base import Explainer
from sae_lab.explainers.dnd.crops import Box, box_iou, crop_boxes, crop_image, latent_maps, upsample
from sae_lab.explainers.dnd.engine import DndEngine
from sae_lab.explainers.dnd.outputs import METHOD, latent_dir, write_latent
from sae_lab.explainers.dnd.runner import naming_block, run, run_dnd
from sae_lab.explainers.dnd.select import NO_HITS_WEIGHT, CandidateScore, Ranking, choose, final_scores, rank_candidates
from sae_lab.explainers.dnd.settings import SKETCH_TEMPLATE, DndSettings
from sae_lab.explainers.dnd.summarize import (
    PROMPT,
    candidates_from,
    noun_phrases,
    offline_summary,
    parse_label,
)
from sae_lab.explainers.dnd.work import LatentWork, Shown

EXPLAINER = Explainer(
    name="dnd",
    help="Describe-and-Dissect: crops → captions → LLM summaries → generated images, batched and resumable "
    "→ explanations/dnd.jsonl, dnd/",
    settings=DndSettings,
    run=run,
    methods=(METHOD,),
)

__all__ = [
    "EXPLAINER",
    "METHOD",
    "NO_HITS_WEIGHT",
    "PROMPT",
    "SKETCH_TEMPLATE",
    "Box",
    "CandidateScore",
    "DndEngine",
    "DndSettings",
    "LatentWork",
    "Ranking",
    "Shown",
    "box_iou",
    "candidates_from",
    "choose",
    "crop_boxes",
    "crop_image",
    "final_scores",
    "latent_dir",
    "latent_maps",
    "naming_block",
    "noun_phrases",
    "offline_summary",
    "parse_label",
    "rank_candidates",
    "run",
    "run_dnd",
    "upsample",
    "write_latent",
]
