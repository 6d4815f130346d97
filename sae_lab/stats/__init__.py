"""Latent statistics for the neuron report: one streaming pass, exact thresholds/PMI/AUC, logit lens, knockout.

Plain torch; the report command and its Lightning callback only call :class:`LatentStats` ``update``/``compute``.
"""

from sae_lab.stats.concept import ConceptScores, concept_scores, mad
from sae_lab.stats.exemplars import TopExemplars, select_top
from sae_lab.stats.ground_truth import (
    PrimitiveMatch,
    RecoveredPrimitives,
    best_primitive,
    histogram_auc,
    pool_masks,
    rank_auc,
    recovered_primitives,
    roc_auc,
    token_bin_edges,
)
from sae_lab.stats.knockout import (
    KnockoutComparison,
    closed_form_knockout,
    compare_knockout,
    image_activations,
    logit_lens,
    measured_knockout,
    pearson,
)
from sae_lab.stats.latent_stats import LatentStats, gather_latent_stats
from sae_lab.stats.ranking import class_scores, latent_summary, monosemanticity, pmi, rank_classes, zscore
from sae_lab.stats.result import LatentStatsResult
from sae_lab.stats.storage import ChunkedRows
from sae_lab.stats.thresholds import quantile_linear

__all__ = [
    "ChunkedRows",
    "ConceptScores",
    "KnockoutComparison",
    "LatentStats",
    "LatentStatsResult",
    "PrimitiveMatch",
    "RecoveredPrimitives",
    "TopExemplars",
    "best_primitive",
    "class_scores",
    "closed_form_knockout",
    "compare_knockout",
    "concept_scores",
    "gather_latent_stats",
    "histogram_auc",
    "image_activations",
    "latent_summary",
    "logit_lens",
    "mad",
    "measured_knockout",
    "monosemanticity",
    "pearson",
    "pmi",
    "pool_masks",
    "quantile_linear",
    "rank_auc",
    "rank_classes",
    "recovered_primitives",
    "roc_auc",
    "select_top",
    "token_bin_edges",
    "zscore",
]
