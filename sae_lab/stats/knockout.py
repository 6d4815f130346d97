"""Logit lens and knockout: closed form from the statistics, and measured by ablating a latent in the SAE.

With a head that is a global average pool followed by a linear layer, the spliced logits are
``W_out · (σ ⊙ mean_t(Σ_j z_tj d_j + b_dec) + μ) + b``, so zeroing latent i changes class c's logit by exactly
``−z_avg,i · w_i[c]`` with ``w_i = W_out (d_i ⊙ σ)`` (the logit lens). Averaged over the latent's on-images
this is the closed form ``Δ⁻_i(c) = −mean_on(z_avg,i)·w_i[c]``. The measured value differs only because the
closed form averages the *dense* code ReLU(pre) (what the statistics use) while the ablation removes the
latent from the *Top-K* code the SAE actually decodes; when K = M the two agree to rounding. A non-linear head
(an earlier layer) adds a genuine difference, which is what the measurement is there to show.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from sae_lab.models.tokens import fmap_to_tokens, tokens_to_fmap


class SaeLike(Protocol):
    """What the knockout needs from an SAE (``sae_lab.models.sae.TopKSAE`` fits)."""

    W_dec: Tensor
    sigma: Tensor

    def standardize(self, x: Tensor) -> Tensor: ...

    def unstandardize(self, x_tilde: Tensor) -> Tensor: ...

    def dense_acts(self, x_tilde: Tensor) -> Tensor: ...

    def encode(self, x_tilde: Tensor) -> tuple[Tensor, Tensor]: ...

    def decode(self, latent_acts: Tensor, latent_indices: Tensor) -> Tensor: ...


def logit_lens(W_dec: Tensor, sigma: Tensor, W_out: Tensor) -> Tensor:
    """w_i = W_out (d_i ⊙ σ): each decoder direction, un-standardised, read by the classifier.

    Args:
        W_dec: (M, C) decoder rows d_i.
        sigma: (C,) standardisation scale σ.
        W_out: (classes, C) weight of the head's linear layer.

    Returns:
        (M, classes) logit lens.
    """
    return (W_dec * sigma) @ W_out.t()


def closed_form_knockout(mean_on_zavg: Tensor, lens: Tensor) -> Tensor:
    """Δ⁻_i(c) = −mean_on(z_avg,i)·w_i[c]: the logit change expected from removing latent i on its on-images.

    Args:
        mean_on_zavg: (M,) mean per-image z_avg over each latent's on-images.
        lens: (M, classes) logit lens.

    Returns:
        (M, classes).
    """
    return -mean_on_zavg.to(lens.dtype)[:, None] * lens


@torch.no_grad()
def image_activations(sae: SaeLike, fmap: Tensor, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """Per-image ``z_max`` and ``z_avg`` of the dense code ReLU(pre).

    Args:
        sae: the SAE.
        fmap: (B, C, H, W) feature maps.

    Returns:
        z_max (B, M), z_avg (B, M).
    """
    z_max, z_avg = [], []
    for f in fmap.split(batch_size):
        acts = sae.dense_acts(sae.standardize(fmap_to_tokens(f))).reshape(len(f), -1, sae.W_dec.shape[0])
        z_max.append(acts.amax(1))
        z_avg.append(acts.mean(1))
    return torch.cat(z_max), torch.cat(z_avg)


@torch.no_grad()
def measured_knockout(
    head: Callable[[Tensor], Tensor],
    sae: SaeLike,
    fmap: Tensor,
    pairs: Sequence[tuple[int, int]],
    on_mask: Tensor,
    batch_size: int = 256,
) -> tuple[Tensor, Tensor]:
    """Mean change of the class-c logit when latent i is zeroed in the Top-K code, over i's on-images.

    Both sides are spliced: the reference is ``head(unstandardize(decode(encode(x̃))))``, the ablation decodes
    the same code with latent i's activation set to 0.

    Args:
        head: (B, C, H, W) map → (B, classes) logits.
        sae: the SAE.
        fmap: (B, C, H, W) feature maps of the evaluated images.
        pairs: (latent, class) pairs.
        on_mask: (B, M) bool, the images on which each latent is "on" (e.g. ``z_max ≥ τ`` and ``z_max > 0``).
        batch_size: images per forward.

    Returns:
        measured (E,) float64 mean logit change (nan where the latent has no on-image), and num_images (E,).
    """
    b, c, h, w = fmap.shape
    codes, base = [], []
    for f in fmap.split(batch_size):
        acts, indices = sae.encode(sae.standardize(fmap_to_tokens(f)))
        codes.append((acts.reshape(len(f), h * w, -1), indices.reshape(len(f), h * w, -1)))
        base.append(head(tokens_to_fmap(sae.unstandardize(sae.decode(acts, indices)), f.shape)))
    acts_all = torch.cat([a for a, _ in codes])
    indices_all = torch.cat([i for _, i in codes])
    base_logits = torch.cat(base).double()

    measured = torch.full((len(pairs),), torch.nan, dtype=torch.float64)
    counts = torch.zeros(len(pairs), dtype=torch.long)
    by_latent: dict[int, list[int]] = {}
    for e, (latent, _) in enumerate(pairs):
        by_latent.setdefault(int(latent), []).append(e)
    for latent, entries in by_latent.items():
        images = on_mask[:, latent].nonzero().squeeze(1).to(fmap.device)
        if len(images) == 0:
            continue
        classes = torch.tensor([int(pairs[e][1]) for e in entries], device=fmap.device)
        total = torch.zeros(len(entries), dtype=torch.float64, device=fmap.device)
        for chunk in images.split(batch_size):
            acts, indices = acts_all[chunk], indices_all[chunk]
            ablated = acts.masked_fill(indices == latent, 0.0)
            x_hat = sae.decode(ablated.reshape(-1, acts.shape[-1]), indices.reshape(-1, acts.shape[-1]))
            logits = head(tokens_to_fmap(sae.unstandardize(x_hat), (len(chunk), c, h, w))).double()
            total += (logits - base_logits[chunk])[:, classes].sum(0)
        measured[entries] = (total / len(images)).cpu()
        counts[entries] = len(images)
    return measured, counts


def pearson(x: Tensor, y: Tensor) -> float:
    """Pearson correlation of two (E,) vectors; nan for fewer than 2 points or zero variance."""
    x, y = x.double().flatten(), y.double().flatten()
    if len(x) < 2:
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    return ((x * y).sum() / (x.norm() * y.norm())).item()


class KnockoutComparison(NamedTuple):
    """Closed-form vs measured knockout for evaluated (latent, class) pairs."""

    latent: Tensor
    """(E,) int64 latent of each pair."""
    class_index: Tensor
    """(E,) int64 class of each pair."""
    closed_form: Tensor
    """(E,) float64 Δ⁻ = −mean_on(z_avg)·w from the dense code."""
    measured: Tensor
    """(E,) float64 mean logit change from zeroing the latent in the Top-K code."""
    num_images: Tensor
    """(E,) int64 on-images the measurement averaged over (pairs with 0 are left out)."""
    correlation: float
    """Pearson correlation of closed_form and measured over the pairs."""


@torch.no_grad()
def compare_knockout(
    head: Callable[[Tensor], Tensor],
    sae: SaeLike,
    fmap: Tensor,
    lens: Tensor,
    top_classes: Tensor,
    on_mask: Tensor,
    mean_on_zavg: Tensor | None = None,
    latents: Sequence[int] | None = None,
    batch_size: int = 256,
) -> KnockoutComparison:
    """Closed-form and measured knockout for each latent's top classes, and their correlation.

    Args:
        head: (B, C, H, W) map → (B, classes) logits.
        sae: the SAE.
        fmap: (B, C, H, W) feature maps of the evaluated images.
        lens: (M, classes) logit lens.
        top_classes: (M, k) int64 classes to evaluate per latent (e.g. from ``rank_classes``).
        on_mask: (B, M) bool on-images of each latent among ``fmap``.
        mean_on_zavg: (M,) for the closed form, e.g. the dataset value from ``LatentStatsResult``; None computes
            it from the dense code on the same on-images (the like-for-like check).
        latents: latents to evaluate (default: all).
        batch_size: images per forward.
    """
    latents = range(len(top_classes)) if latents is None else latents
    pairs = [(int(i), int(c)) for i in latents for c in top_classes[i].tolist()]
    measured, counts = measured_knockout(head, sae, fmap, pairs, on_mask, batch_size)
    keep = counts > 0
    latent = torch.tensor([p[0] for p in pairs], dtype=torch.long)[keep]
    cls = torch.tensor([p[1] for p in pairs], dtype=torch.long)[keep]
    if mean_on_zavg is None:
        _, z_avg = image_activations(sae, fmap, batch_size)
        on = on_mask.to(z_avg.device, z_avg.dtype)
        mean_on_zavg = (z_avg * on).sum(0) / on.sum(0).clamp_min(1)
    closed = closed_form_knockout(mean_on_zavg.double().cpu(), lens.double().cpu())[latent, cls]
    measured = measured[keep]
    return KnockoutComparison(latent, cls, closed, measured, counts[keep], pearson(closed, measured))
