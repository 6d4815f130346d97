"""Labels (stats → LLM): a short concept per latent from its statistics (and exemplar sprite) with any text
backend; writes ``labels.jsonl`` (its own detail) and ``explanations/labels.jsonl``."""

from sae_lab.explainers.base import Explainer, parse_latents
from sae_lab.explainers.labels.labeller import Labeller
from sae_lab.explainers.labels.prompt import (
    SYSTEM_PROMPT,
    LabelTask,
    build_prompt,
    make_task,
    prompt_hash,
    prompt_stats,
)
from sae_lab.explainers.labels.run import LabelOutcome, LabelSettings, label_run, run, run_labels
from sae_lab.run.files import LABELS
from sae_lab.run.records import LabelRecord
from sae_lab.run.store import LabelStore

EXPLAINER = Explainer(
    name="labels",
    help="name each live latent with an LLM from its statistics (+ exemplar sprite) → explanations/labels.jsonl",
    settings=LabelSettings,
    run=run,
    methods=("labels",),
)

__all__ = [
    "EXPLAINER",
    "LABELS",
    "SYSTEM_PROMPT",
    "LabelOutcome",
    "LabelRecord",
    "LabelSettings",
    "LabelStore",
    "LabelTask",
    "Labeller",
    "build_prompt",
    "label_run",
    "make_task",
    "parse_latents",
    "prompt_hash",
    "prompt_stats",
    "run_labels",
]
