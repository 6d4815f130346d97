"""``evaluate``: every explanation of a run scored on the same latents with held-out evidence (DESIGN.md,
"Evaluation"): CoSy AUC / MAD on images from a held-out generator, LE's simulation correlation on held-out real
images, strict and lenient ground-truth naming on the sketch world, and cost per latent, with the baselines
``random``, ``top-class`` and ``oracle``.

Entry points: :class:`EvaluateSettings` + :func:`run_evaluate` (writes ``evaluation.json``, the ``evaluation``
block of ``summary.json`` and the report section) or :func:`evaluate` (computes only); :func:`simulate` and
:func:`mean_se` for scoring explanations elsewhere; :func:`evaluation_chart_svg` for the page.
"""

from sae_lab.evaluate.chart import evaluation_chart_svg
from sae_lab.evaluate.heldout import HeldoutGenerator, UsedGeneration, check_heldout, recorded_generation
from sae_lab.evaluate.metrics import METRICS, mean_se, method_table
from sae_lab.evaluate.naming import explanation_concepts, has_ground_truth, named_primitives, naming
from sae_lab.evaluate.pipeline import Work, evaluate, run_evaluate
from sae_lab.evaluate.rows import BASELINES, baselines, check_same_sae, sample_latents, vocabulary
from sae_lab.evaluate.settings import HELDOUT_TEMPLATE, SEED_SPACE, EvaluateSettings
from sae_lab.evaluate.simulate import PresenceTable, make_simulator, offline_presence, pearson_r, predict, simulate
from sae_lab.evaluate.table import format_table, summary_block

__all__ = [
    "BASELINES",
    "HELDOUT_TEMPLATE",
    "METRICS",
    "SEED_SPACE",
    "EvaluateSettings",
    "HeldoutGenerator",
    "PresenceTable",
    "UsedGeneration",
    "Work",
    "baselines",
    "check_heldout",
    "check_same_sae",
    "evaluate",
    "evaluation_chart_svg",
    "explanation_concepts",
    "format_table",
    "has_ground_truth",
    "make_simulator",
    "mean_se",
    "method_table",
    "named_primitives",
    "naming",
    "offline_presence",
    "pearson_r",
    "predict",
    "recorded_generation",
    "run_evaluate",
    "sample_latents",
    "simulate",
    "summary_block",
    "vocabulary",
]
