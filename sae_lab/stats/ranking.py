"""PMI, class ranking S = z(PMI) + 2·z(−Δ⁻) + z(w), monosemanticity, and a latent's stats-block summary."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from sae_lab.stats.result import LatentStatsResult

KNOCKOUT_WEIGHT = 2.0
"""Weight of z(−Δ⁻) in the class score S (DESIGN.md, "ranking")."""


def pmi(class_on_counts: Tensor, n_on: Tensor, class_counts: Tensor, num_images: int, lam: float = 1.0) -> Tensor:
    """Pointwise mutual information between "latent on" and each class, Laplace-smoothed (DESIGN.md).

    P(c) = (n_c + λ)/(N + λ·C), P(c | on) = (n_ic + λ)/(n_i + λ·C), PMI = log P(c | on)/P(c).

    Args:
        class_on_counts: (M, C) n_ic, on-images of latent i in class c.
        n_on: (M,) n_i, on-images of latent i.
        class_counts: (C,) n_c, images of class c.
        num_images: N.
        lam: λ.

    Returns:
        (M, C) float64 PMI in nats.
    """
    num_classes = class_counts.shape[-1]
    p_c = (class_counts.double() + lam) / (num_images + lam * num_classes)
    p_c_on = (class_on_counts.double() + lam) / (n_on.double()[:, None] + lam * num_classes)
    return (p_c_on / p_c).log()


def zscore(x: Tensor, dim: int = -1) -> Tensor:
    """(x − mean)/std along ``dim`` with the population std; rows with zero spread give 0."""
    x = x.double()
    centred = x - x.mean(dim, keepdim=True)
    std = x.std(dim, correction=0, keepdim=True)
    flat = std <= 1e-12 * x.abs().amax(dim, keepdim=True).clamp_min(1e-300)
    return torch.where(flat, torch.zeros_like(centred), centred / torch.where(flat, torch.ones_like(std), std))


def class_scores(pmi: Tensor, knockout: Tensor, lens: Tensor) -> Tensor:
    """S = z(PMI) + 2·z(−Δ⁻) + z(w), z-scored across classes for each latent.

    Args:
        pmi: (M, C) PMI.
        knockout: (M, C) closed-form Δ⁻ (negative where the latent supports the class).
        lens: (M, C) logit lens w.

    Returns:
        (M, C) float64 S.
    """
    return zscore(pmi) + KNOCKOUT_WEIGHT * zscore(-knockout) + zscore(lens)


def rank_classes(score: Tensor, k: int = 5) -> tuple[Tensor, Tensor]:
    """Top classes (largest S first) and anti-classes (most negative S first) of every latent.

    Anti-classes use S, not w alone: when a latent is ever on, −Δ⁻ is a positive multiple of w, so
    S = z(PMI) + 3·z(w) and its lowest entries are classes the latent argues against *and* rarely co-occurs with.

    Args:
        score: (M, C) S from :func:`class_scores`.
        k: classes per list (clipped to C).

    Returns:
        top (M, k) and anti (M, k) int64 class indices.
    """
    order = score.argsort(dim=1, descending=True, stable=True)
    k = min(k, score.shape[1])
    return order[:, :k], order.flip(1)[:, :k]


def monosemanticity(class_on_counts: Tensor) -> Tensor:
    """1 − H(c | on)/log C: 1 when all on-images share one class, 0 when they spread evenly (or none is on).

    Uses the raw class distribution of the latent's on-images (no Laplace smoothing).

    Args:
        class_on_counts: (M, C) n_ic.

    Returns:
        (M,) float64 in [0, 1].
    """
    counts = class_on_counts.double()
    total = counts.sum(1, keepdim=True)
    p = counts / total.clamp_min(1)
    entropy = -(p * p.clamp_min(1e-300).log()).sum(1)
    score = 1 - entropy / math.log(counts.shape[1])
    return torch.where(total[:, 0] > 0, score, torch.zeros_like(score)).clamp(0, 1)


def latent_summary(
    result: LatentStatsResult,
    latent: int,
    class_names: Sequence[str] | None = None,
    primitive_names: Sequence[str] | None = None,
    k: int = 5,
) -> dict[str, Any]:
    """The dict a stats block carries for one latent (keys read by ``sae_lab.backends.text.offline``).

    ``top_classes``/``anti_classes`` are lists of ``{"class", "S", "pmi", "delta", "w"}`` (needs a result
    computed with a logit lens; otherwise ranked by PMI with S/delta/w None); ``ground_truth`` is
    ``{"primitive", "auc", "token_auc"}`` for the best primitive by image AUC, or None without ground truth.
    """
    i = latent
    names = class_names or [str(c) for c in range(result.pmi.shape[1])]
    score = result.score if result.score is not None else result.pmi
    top, anti = rank_classes(score[i : i + 1], k)

    def entry(c: int) -> dict[str, Any]:
        row = {"class": names[c], "S": None, "pmi": result.pmi[i, c].item(), "delta": None, "w": None}
        if result.score is not None:
            row.update(
                S=result.score[i, c].item(), delta=result.knockout[i, c].item(), w=result.logit_lens[i, c].item()
            )
        return row

    ground_truth = None
    if result.image_auc is not None and not result.image_auc[i].isnan().all():
        p = int(result.image_auc[i].nan_to_num(nan=-1.0).argmax())
        token_auc = None if result.token_auc is None else result.token_auc[i, p].item()
        prim = primitive_names[p] if primitive_names else str(p)
        ground_truth = {"primitive": prim, "auc": result.image_auc[i, p].item(), "token_auc": token_auc}
    return {
        "latent": i,
        "frequency": result.frequency[i].item(),
        "image_frequency": result.image_frequency[i].item(),
        "tau": result.tau[i].item(),
        "n_on": int(result.n_on[i]),
        "mean_on_zavg": result.mean_on_zavg[i].item(),
        "monosemanticity": result.monosemanticity[i].item(),
        "top_classes": [entry(int(c)) for c in top[0]],
        "anti_classes": [entry(int(c)) for c in anti[0]],
        "ground_truth": ground_truth,
    }
