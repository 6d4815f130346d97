"""The result of :meth:`sae_lab.stats.latent_stats.LatentStats.compute`: per-latent statistics as tensors."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class LatentStatsResult:
    """What :meth:`LatentStats.compute` returns (M latents, C classes, P primitives, N exemplars, T tokens)."""

    num_images: int
    """Images seen."""
    num_tokens: int
    """Tokens seen."""
    frequency: Tensor
    """(M,) fraction of tokens with activation > 0."""
    image_frequency: Tensor
    """(M,) fraction of images with z_max > 0."""
    mean_act: Tensor
    """(M,) mean token activation over the tokens where the latent fires (0 if it never does)."""
    tau: Tensor
    """(M,) τ, the q-quantile of z_max over images (torch.quantile, "linear" interpolation)."""
    n_on: Tensor
    """(M,) int64 on-images: z_max ≥ τ and z_max > 0 (a latent that never fires is never on)."""
    mean_on_zavg: Tensor
    """(M,) mean z_avg over the on-images (0 when none)."""
    class_counts: Tensor
    """(C,) int64 images per class, n_c."""
    class_on_counts: Tensor
    """(M, C) int64 on-images per class, n_ic."""
    class_fire_counts: Tensor
    """(M, C) int64 images per class with z_max > 0."""
    pmi: Tensor
    """(M, C) float64 PMI(on, c) with Laplace λ (DESIGN.md)."""
    monosemanticity: Tensor
    """(M,) 1 − H(c | on)/log C of the on-images' raw class distribution (0 when never on)."""
    exemplar_ids: Tensor
    """(M, N) int64 ids of the images with the largest z_max, best first (ties: smaller id); −1 pads."""
    exemplar_z_max: Tensor
    """(M, N) their z_max (−inf pads)."""
    exemplar_labels: Tensor
    """(M, N) int64 their class labels (−1 pads)."""
    exemplar_maps: Tensor
    """(M, N, T) their token activation maps (reshape T to the feature map's H, W)."""
    logit_lens: Tensor | None = None
    """(M, C) w_i = W_out (d_i ⊙ σ), when given to compute()."""
    knockout: Tensor | None = None
    """(M, C) closed-form Δ⁻_i(c) = −mean_on_zavg_i · w_i[c] (with a logit lens)."""
    score: Tensor | None = None
    """(M, C) S = z(PMI) + 2·z(−Δ⁻) + z(w) (with a logit lens)."""
    image_auc: Tensor | None = None
    """(M, P) exact ROC-AUC of z_max for "image contains primitive p" (with primitives)."""
    token_auc: Tensor | None = None
    """(M, P) histogram ROC-AUC of token activations vs p's pooled token mask (with token masks)."""
