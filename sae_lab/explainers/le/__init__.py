"""Linear Explanations (Oikarinen & Weng, ICML 2024): each latent as a sparse linear mix of concepts.

LE(Label) explains with class one-hots and superclasses, LE(VLM) with a perception backend's concept presences;
both write ``explanations/le-label.jsonl`` / ``le-vlm.jsonl`` (``python -m sae_lab explain le``). The maths is
batched over all latents (:mod:`.fit`); :mod:`.reference` is LE's own per-latent Adam procedure, kept for the
tests and ``benchmarks/le_speed.py``.
"""

from sae_lab.explainers.base import Explainer
from sae_lab.explainers.le.concepts import (
    ConceptMatrix,
    filter_concepts,
    label_concepts,
    read_concept_file,
    vlm_concept_set,
)
from sae_lab.explainers.le.explain import LeOptions, LinearExplanation, explain_latents
from sae_lab.explainers.le.fit import GreedyFit, elastic_net, greedy_search, pearson, predict, rank_concepts
from sae_lab.explainers.le.runner import run, run_le
from sae_lab.explainers.le.settings import VARIANTS, LeSettings

EXPLAINER = Explainer(
    name="le",
    help="Linear Explanations: each latent as a sparse linear mix of concepts (LE(Label), LE(VLM)) "
    "→ explanations/le-label.jsonl, le-vlm.jsonl",
    settings=LeSettings,
    run=run,
    methods=tuple(VARIANTS.values()),
)

__all__ = [
    "EXPLAINER",
    "VARIANTS",
    "ConceptMatrix",
    "GreedyFit",
    "LeOptions",
    "LeSettings",
    "LinearExplanation",
    "elastic_net",
    "explain_latents",
    "filter_concepts",
    "greedy_search",
    "label_concepts",
    "pearson",
    "predict",
    "rank_concepts",
    "read_concept_file",
    "run",
    "run_le",
    "vlm_concept_set",
]
