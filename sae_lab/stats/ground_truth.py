"""ROC-AUC and MAD, and scoring latents against the sketch world's ground-truth primitives.

Image level is exact: a rank-based Mann–Whitney AUC of the stored per-image ``z_max`` (ties count 0.5),
vectorised over all latents and primitives at once. Token level would need every token's activation, so
:class:`~sae_lab.stats.latent_stats.LatentStats` keeps per (latent, primitive) histograms of token activations
on fine log-spaced bins plus an exact zero bin, and :func:`histogram_auc` reads the AUC off them. Pairs in
different bins are ordered exactly; pairs in the same bin count 0.5, exactly right for the zero bin (ReLU
codes have many exact zeros) and off by at most half the probability that a positive and a negative land in
the same non-zero bin (|error| ≤ ½ Σ_b P(pos∈b)·P(neg∈b); 64 bins per decade keeps it well under 0.01).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

TOKEN_BIN_RANGE = (1e-4, 1e4)
"""Activation range covered by the default log-spaced bins (values outside go to the first/last bin)."""
TOKEN_BINS_PER_DECADE = 64


def token_bin_edges(bins: int | Tensor | None = None) -> Tensor:
    """(E,) increasing positive float64 bin edges for token activation histograms.

    Args:
        bins: None for the default (64 per decade over ``TOKEN_BIN_RANGE``), a number of log-spaced bins over
            ``TOKEN_BIN_RANGE``, or explicit edges.
    """
    if isinstance(bins, Tensor):
        edges = bins.detach().to("cpu", torch.float64).flatten()
        if len(edges) == 0 or (edges <= 0).any() or (edges.diff() <= 0).any():
            raise ValueError("token bin edges must be positive and strictly increasing")
        return edges
    lo, hi = (torch.tensor(TOKEN_BIN_RANGE, dtype=torch.float64)).log10().tolist()
    bins = round((hi - lo) * TOKEN_BINS_PER_DECADE) if bins is None else int(bins)
    if bins < 1:
        raise ValueError(f"token_bins must be >= 1, got {bins}")
    return torch.logspace(lo, hi, bins + 1, dtype=torch.float64)


def bin_index(acts: Tensor, edges: Tensor, offsets: Tensor | None = None, exact_zeros: bool = True) -> Tensor:
    """Histogram bin of each activation: 0 for exact zeros (and negatives), 1 + #edges ≤ value otherwise.

    Geometric edges (the default) are indexed in closed form from log(value), several times faster than a
    binary search; values within float rounding of an edge may land on either side of it, which only moves
    them between adjacent bins (the binning stays monotone).

    Args:
        acts: (..., M) activations.
        edges: (E,) bin edges from :func:`token_bin_edges`.
        offsets: (M,) int64 added along the last axis (e.g. ``latent · bins``, giving one flat id space for a
            single ``bincount`` over every latent's histogram).
        exact_zeros: False puts zeros and negatives in bin 1, with the positive values below the first edge, and
            skips a masked pass over the data; for callers that count zeros apart and move them to bin 0.

    Returns:
        (..., M) int64 in [0, E + 1] (E + 2 bins in all), plus ``offsets``.
    """
    ratios = edges[1:] / edges[:-1]
    if len(edges) > 1 and torch.allclose(ratios, ratios[:1], rtol=1e-9, atol=0.0):
        first, scale = edges[0].item(), 1.0 / math.log2(ratios[0].item())
        steps = acts.clamp_min(first / 2).log2_()  # clamped first: log of 0 takes a slow path on CPU
        steps.sub_(math.log2(first)).mul_(scale).floor_().clamp_(-1, len(edges) - 1).add_(2)
        if exact_zeros:
            steps.masked_fill_(acts <= 0, 0)
        exact = steps.dtype in (torch.float32, torch.float64)  # integers below 2**24 are exact in float32
        if offsets is not None and len(offsets) and exact and int(offsets.max()) + len(edges) + 2 < 2**24:
            return steps.add_(offsets.to(steps.dtype)).long()
        idx = steps.long()
    else:
        idx = torch.bucketize(acts, edges.to(acts.device, acts.dtype), right=True) + 1
        if exact_zeros:
            idx.masked_fill_(acts <= 0, 0)
    return idx if offsets is None else idx.add_(offsets)


def average_ranks(scores: Tensor) -> Tensor:
    """1-based ranks along dim 0, ties sharing their average rank (the Mann–Whitney convention).

    Args:
        scores: (N, M) values, one column per latent.

    Returns:
        (N, M) float64 ranks.
    """
    n = len(scores)
    sorted_vals, order = scores.sort(dim=0)
    idx = torch.arange(n, device=scores.device)[:, None].expand_as(sorted_vals)
    starts = torch.ones_like(sorted_vals, dtype=torch.bool)
    starts[1:] = sorted_vals[1:] != sorted_vals[:-1]
    ends = torch.ones_like(starts)
    ends[:-1] = starts[1:]
    first = torch.where(starts, idx, 0).cummax(dim=0).values
    last = torch.where(ends, idx, n).flip(0).cummin(dim=0).values.flip(0)
    ranks = (first + last).to(torch.float64) / 2 + 1
    return torch.empty_like(ranks).scatter_(0, order, ranks)


def rank_auc(scores: Tensor, labels: Tensor) -> Tensor:
    """Exact ROC-AUC of every score column for every label column (ties count 0.5).

    AUC = (Σ_pos rank − n_pos(n_pos+1)/2) / (n_pos·n_neg), with average ranks for ties (Mann–Whitney U).

    Args:
        scores: (N, M) scores, e.g. per-image ``z_max`` of M latents.
        labels: (N, P) bool / 0-1 multi-hot, e.g. "image contains primitive p".

    Returns:
        (M, P) float64 AUC; nan where a label column has no positives or no negatives.
    """
    labels = labels.to(scores.device, torch.float64)
    ranks = average_ranks(scores)
    n_pos = labels.sum(0)  # (P,)
    n_neg = len(labels) - n_pos
    rank_sum = ranks.t() @ labels  # (M, P)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def roc_auc(pos: Tensor, neg: Tensor) -> float:
    """Exact ROC-AUC = P(score of a positive > score of a negative) + ½ P(tie).

    Args:
        pos: (n_pos,) scores of positives (e.g. a latent's ``z_max`` on images generated for a concept).
        neg: (n_neg,) scores of negatives (control images).

    Returns:
        AUC in [0, 1]; nan if either side is empty.
    """
    pos, neg = pos.detach().flatten().double(), neg.detach().flatten().double()
    labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)])
    return rank_auc(torch.cat([pos, neg])[:, None], labels[:, None].to(pos.device)).item()


def histogram_auc(hist_pos: Tensor, hist_neg: Tensor) -> Tensor:
    """ROC-AUC from histograms on shared ascending bins; pairs in the same bin count 0.5.

    Args:
        hist_pos: (..., bins) counts of positives per bin.
        hist_neg: (..., bins) counts of negatives per bin.

    Returns:
        (...) float64 AUC; nan where a side is empty.
    """
    pos, neg = hist_pos.double(), hist_neg.double()
    below = neg.cumsum(-1) - neg  # negatives in strictly lower bins
    wins = (pos * (below + 0.5 * neg)).sum(-1)
    return wins / (pos.sum(-1) * neg.sum(-1))


def pool_masks(masks: Tensor, grid: tuple[int, int], min_fraction: float = 0.0) -> Tensor:
    """Pixel masks → token masks on the feature-map grid (a token is on when more than ``min_fraction`` of its
    cell's pixels are, i.e. any pixel by default).

    Args:
        masks: (B, P, S, S) bool per-primitive pixel masks.
        grid: (H, W) of the explained feature map.
        min_fraction: share of a cell's pixels that must be on (exclusive).

    Returns:
        (B, H·W, P) bool, tokens in the order of :func:`sae_lab.models.tokens.fmap_to_tokens`.
    """
    frac = F.adaptive_avg_pool2d(masks.float(), grid)  # (B, P, H, W)
    return (frac > min_fraction).flatten(2).transpose(1, 2)


class PrimitiveMatch(NamedTuple):
    """Best ground-truth primitive of every latent (by image-level AUC)."""

    primitive: Tensor
    """(M,) int64 index of the best primitive (−1 when no AUC is defined)."""
    image_auc: Tensor
    """(M,) its image-level AUC."""
    token_auc: Tensor
    """(M,) its token-level AUC (nan without token masks)."""


def best_primitive(image_auc: Tensor, token_auc: Tensor | None = None) -> PrimitiveMatch:
    """The primitive with the highest image-level AUC for each latent, with the token-level AUC alongside.

    Args:
        image_auc: (M, P).
        token_auc: (M, P) or None.
    """
    filled = image_auc.nan_to_num(nan=-1.0)
    best = filled.argmax(1)
    auc = image_auc.gather(1, best[:, None]).squeeze(1)
    best = torch.where(auc.isnan(), torch.full_like(best, -1), best)
    tok = (
        torch.full_like(auc, torch.nan) if token_auc is None else token_auc.gather(1, best.clamp_min(0)[:, None])[:, 0]
    )
    return PrimitiveMatch(best, auc, torch.where(best < 0, torch.nan, tok))


class RecoveredPrimitives(NamedTuple):
    """For every primitive, the latent that detects it best."""

    latent: Tensor
    """(P,) int64 latent with the highest AUC for the primitive (−1 when undefined)."""
    auc: Tensor
    """(P,) that latent's AUC."""
    recovered: Tensor
    """(P,) bool, AUC ≥ the threshold."""


def recovered_primitives(auc: Tensor, threshold: float = 0.9) -> RecoveredPrimitives:
    """Recovered-primitive table: primitive p is recovered when some latent reaches AUC ≥ ``threshold``.

    Args:
        auc: (M, P) AUC of every latent for every primitive (image level in the report).
        threshold: the recovery bar (DESIGN.md: 0.9).
    """
    best_auc, latent = auc.nan_to_num(nan=-1.0).max(0)
    undefined = best_auc < 0
    return RecoveredPrimitives(
        torch.where(undefined, -1, latent),
        torch.where(undefined, torch.nan, best_auc.to(auc.dtype)),
        best_auc >= threshold,
    )
