"""Each latent's on-threshold and what follows from it, exact from the per-image rows.

τ_i is the q-quantile of z_max_i over images (DESIGN.md: q = 0.99); latent i is *on* for an image when
z_max_i >= τ_i and z_max_i > 0. From that: how many images it is on for, their mean z_avg, their class counts,
and (with ground truth) the image-level AUC of z_max against each primitive. Latents are processed a chunk of
columns at a time so that only ``chunk_elements`` images × latents are held (float64) at once.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from sae_lab.stats.ground_truth import rank_auc
from sae_lab.stats.storage import ChunkedRows


class OnStats(NamedTuple):
    """Per-latent statistics of the images a latent is on for."""

    tau: Tensor
    """(M,) float64 on-threshold τ."""
    n_on: Tensor
    """(M,) int64 images the latent is on for."""
    mean_on_zavg: Tensor
    """(M,) float64 mean z_avg over those images (0 when there are none)."""
    class_on_counts: Tensor
    """(M, C) int64 those images per class."""
    image_auc: Tensor | None
    """(M, P) float64 image-level AUC of z_max against each primitive; None without ground truth."""


def on_stats(
    z_max: ChunkedRows,
    z_avg: ChunkedRows,
    labels: Tensor,
    primitives: Tensor | None,
    num_classes: int,
    quantile: float,
    chunk_elements: int = 1 << 22,
) -> OnStats:
    """τ, on-counts, mean on-z_avg, class on-counts and image AUC of every latent.

    Args:
        z_max: (N, M) per-image max activation rows.
        z_avg: (N, M) per-image mean activation rows.
        labels: (N,) int64 class labels.
        primitives: (N, P) bool multi-hot ground truth, or None.
        num_classes: C.
        quantile: q of τ.
        chunk_elements: images × latents held at once.
    """
    n, (m,), c = len(labels), z_max.row_shape, num_classes
    tau = torch.empty(m, dtype=torch.float64)
    mean_on = torch.zeros(m, dtype=torch.float64)
    n_on = torch.zeros(m, dtype=torch.long)
    class_on = torch.zeros(m, c, dtype=torch.long)
    image_auc = None if primitives is None else torch.full((m, primitives.shape[1]), torch.nan, dtype=torch.float64)
    cols = max(1, chunk_elements // n)
    for m0 in range(0, m, cols):
        sl = slice(m0, min(m, m0 + cols))
        zmax = z_max.read(sl).double()
        zavg = z_avg.read(sl).double()
        tau[sl] = quantile_linear(zmax, quantile)
        on = (zmax >= tau[sl]) & (zmax > 0)
        n_on[sl] = on.sum(0)
        mean_on[sl] = (zavg * on).sum(0) / n_on[sl].clamp_min(1)
        class_on[sl] = torch.zeros(c, on.shape[1], dtype=torch.long).index_add_(0, labels, on.long()).t()
        if primitives is not None:
            image_auc[sl] = rank_auc(zmax, primitives)
    return OnStats(tau, n_on, mean_on, class_on, image_auc)


def quantile_linear(x: Tensor, q: float) -> Tensor:
    """q-quantile along dim 0 with ``torch.quantile``'s "linear" interpolation, without its size limit.

    Args:
        x: (N, M).

    Returns:
        (M,) quantiles.
    """
    sorted_vals = x.sort(dim=0).values
    pos = q * (len(x) - 1)
    lo = int(pos // 1)
    hi = min(lo + 1, len(x) - 1)
    return torch.lerp(sorted_vals[lo], sorted_vals[hi], torch.tensor(pos - lo, dtype=x.dtype))
