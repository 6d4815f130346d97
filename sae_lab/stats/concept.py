"""Concept AUC and MAD (LINE, CoSy): the one implementation every explainer and ``evaluate`` use.

DESIGN.md, "concept AUC / MAD": positives = a latent's ``z_max`` on images generated for a concept, negatives =
its ``z_max`` on real control images; AUC = ROC-AUC(positives vs negatives) with ties counted ½,
MAD = (mean_pos − mean_ctrl) / std_ctrl with Bessel's correction, null (NaN here) when std_ctrl = 0.
A method that needs a finite MAD to rank concepts (LINE) applies its own floor on top, explicitly.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from sae_lab.stats.ground_truth import rank_auc

METRICS = ("auc", "mad", "mean")
"""The scores a concept gets: ``auc``, ``mad`` and ``mean`` (mean activation on the concept images)."""


class ConceptScores(NamedTuple):
    """Scores of one concept for L latents."""

    auc: Tensor
    """(L,) float64 ROC-AUC of the concept images against the control images; NaN without concept images."""
    mad: Tensor
    """(L,) float64 mean activation difference in units of the control std; NaN when that std is 0."""
    mean: Tensor
    """(L,) float64 mean ``z_max`` on the concept images."""

    def metric(self, name: str) -> Tensor:
        if name not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {name!r}")
        return getattr(self, name)


def control_std(ctrl: Tensor) -> Tensor:
    """(L,) float64 std of each column with Bessel's correction (0 with fewer than 2 rows)."""
    ctrl = ctrl.double()
    return ctrl.std(0) if len(ctrl) > 1 else torch.zeros(ctrl.shape[1], dtype=torch.float64)


def concept_scores(pos: Tensor, ctrl: Tensor) -> ConceptScores:
    """AUC, MAD and mean activation of every latent at once.

    Args:
        pos: (n, L) ``z_max`` of L latents on n concept images.
        ctrl: (N, L) ``z_max`` of the same latents on N control images.

    Returns:
        The scores; AUC and mean are NaN when ``n`` is 0, MAD is NaN where std_ctrl = 0 (DESIGN: null).
    """
    pos, ctrl = pos.double(), ctrl.double()
    if pos.dim() != 2 or ctrl.dim() != 2 or pos.shape[1] != ctrl.shape[1]:
        raise ValueError(f"expected (n, L) positives and (N, L) controls, got {tuple(pos.shape)}, {tuple(ctrl.shape)}")
    nan = torch.full((pos.shape[1],), torch.nan, dtype=torch.float64)
    if len(pos) == 0:
        return ConceptScores(nan, nan.clone(), nan.clone())
    if len(ctrl) == 0:
        return ConceptScores(nan, nan.clone(), pos.mean(0))
    labels = torch.cat([torch.ones(len(pos)), torch.zeros(len(ctrl))]).double()[:, None]
    auc = rank_auc(torch.cat([pos, ctrl]), labels)[:, 0]
    std = control_std(ctrl)
    diff = pos.mean(0) - ctrl.mean(0)
    mad = torch.where(std > 0, diff / std.where(std > 0, torch.ones_like(std)), nan)
    return ConceptScores(auc, mad, pos.mean(0))


def mad(pos: Tensor, neg: Tensor) -> float:
    """Mean activation difference (CoSy) of one latent: :func:`concept_scores`'s MAD for (n,) and (N,) scores.

    Returns:
        (mean_pos − mean_neg) / std_neg (Bessel); NaN when std_neg = 0 or there are no positives.
    """
    return concept_scores(pos.detach().flatten()[:, None], neg.detach().flatten()[:, None]).mad.item()


__all__ = ["METRICS", "ConceptScores", "concept_scores", "control_std", "mad"]
