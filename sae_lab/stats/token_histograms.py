"""Token-level activation histograms for the token AUC: every masked token's activation, per latent, and per
primitive the tokens on its mask, counted in shared bins (edges from ``ground_truth.token_bin_edges``).

Counts add across batches and ranks, so the token AUC of the whole stream is exact up to the binning.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sae_lab.stats.ground_truth import bin_index, histogram_auc


def add_token_histograms(
    hist_all: Tensor, hist_on: Tensor, acts: Tensor, nonzero: Tensor, masks: Tensor, edges: Tensor, token_chunk: int
) -> None:
    """Adds a batch of tokens to the histograms, in place.

    Zeros are binned with the tiny positive values (bin 1) and then moved to bin 0 by count — (M,) and (P, M)
    zero counts from one comparison and a (P, n)·(n, M) product — instead of masking every entry.

    Args:
        hist_all: (M·bins,) int64 counts of all masked tokens, latent-major.
        hist_on: (P, M·bins) int64 counts of the tokens on each primitive's mask.
        acts: (n, M) token activations.
        nonzero: (n, M) bool, ``acts > 0``.
        masks: (n, P) primitive masks of the tokens.
        edges: (E,) bin edges; bins = E + 2.
        token_chunk: (token, latent) entries binned at once (bounds the scratch memory).
    """
    m, p = acts.shape[1], hist_on.shape[0]
    nb = len(edges) + 2
    offsets = torch.arange(m, device=acts.device) * nb
    step = max(1, token_chunk // m)
    for start in range(0, len(acts), step):
        part = acts[start : start + step]
        mask = masks[start : start + len(part)].bool()
        flat = bin_index(part, edges, offsets, exact_zeros=False)  # (n, M) global bin ids
        hist_all += torch.bincount(flat.flatten(), minlength=m * nb)
        for q in range(p):
            sel = mask[:, q]
            if sel.any():
                hist_on[q] += torch.bincount(flat[sel].flatten(), minlength=m * nb)
        fired = nonzero[start : start + len(part)]
        zeros_all = len(part) - fired.sum(0)  # (M,)
        fired_on = (mask.t().to(part.dtype) @ fired.to(part.dtype)).round().long()  # (P, M): exact below 2**24
        zeros_on = mask.sum(0, keepdim=True).t() - fired_on
        all_view, on_view = hist_all.view(m, nb), hist_on.view(p, m, nb)
        all_view[:, 1] -= zeros_all
        all_view[:, 0] += zeros_all
        on_view[:, :, 1] -= zeros_on
        on_view[:, :, 0] += zeros_on


def token_auc_from_histograms(hist_all: Tensor, hist_on: Tensor, num_latents: int) -> Tensor:
    """(M, P) float64 token-level AUC of each latent against each primitive (on-mask tokens vs the rest)."""
    p = hist_on.shape[0]
    hist_all = hist_all.view(num_latents, -1).cpu()
    hist_on = hist_on.view(p, num_latents, -1).cpu()
    return histogram_auc(hist_on, hist_all - hist_on).t().contiguous()
