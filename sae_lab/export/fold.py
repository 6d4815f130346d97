"""The standardisation folded into the weights, so that an exported SAE reads raw feature-map tokens.

Our SAE (:class:`~sae_lab.models.sae.TopKSAE`) standardises first: with ``x̃ = (x − μ)/σ`` (per channel),

    pre = W_enc (x̃ − b_dec) + b_enc,   z = TopK(ReLU(pre)),   x̂_raw = σ ⊙ (W_decᵀ z + b_dec) + μ.

sparsify's ``SparseCoder`` and SAELens's ``TopKSAE`` (``apply_b_dec_to_input``) have no standardisation and one
decoder bias b' shared by the encoder and the decoder:

    pre = W_enc' (x − b') + b_enc',   x̂ = W_dec'ᵀ z + b'.

Decoder. x̂ must equal x̂_raw for every code z. The z-term gives ``W_dec'ᵀ z = σ ⊙ (W_decᵀ z)``, i.e. each decoder
row scaled per channel, ``d_i' = d_i ⊙ σ`` (``W_dec' = W_dec · diag(σ)``); the constant gives ``b' = σ ⊙ b_dec + μ``.

Encoder. Write x̃ − b_dec in terms of b':

    x̃ − b_dec = (x − μ)/σ − b_dec = (x − μ − σ ⊙ b_dec)/σ = (x − b')/σ,

so ``W_enc (x̃ − b_dec) = (W_enc · diag(1/σ)) (x − b')``: ``W_enc' = W_enc / σ`` (each input channel divided by its σ)
and the same b' the decoder needs appears inside the encoder's bracket. The difference that ``b_enc'`` would have to
absorb, ``W_enc' (b' − (μ + σ ⊙ b_dec))``, is therefore exactly zero: ``b_enc' = b_enc``. ``pre`` is the same
number for every token, so Top-K picks the same latents with the same activations, and the reconstruction is the
same raw-space vector (both up to float rounding; the folding itself runs in float64).

The folded decoder rows are no longer unit-norm (their norms are ``‖d_i ⊙ σ‖``), hence ``normalize_decoder``
false in the exported config: a loader that renormalised them would change the reconstructions.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class FoldedWeights(NamedTuple):
    """A Top-K SAE on raw tokens x: ``pre = W_enc (x − b_dec) + b_enc``, ``x̂ = W_decᵀ z + b_dec``."""

    W_enc: Tensor
    """(M, C) encoder, ``W_enc / σ`` per input channel."""
    b_enc: Tensor
    """(M,) encoder bias, unchanged."""
    W_dec: Tensor
    """(M, C) decoder rows ``d_i ⊙ σ``."""
    b_dec: Tensor
    """(C,) shared bias ``σ ⊙ b_dec + μ``."""


@torch.no_grad()
def fold_standardization(sae) -> FoldedWeights:
    """The weights of ``sae`` (a :class:`~sae_lab.models.sae.TopKSAE`) with μ, σ folded in (see the module docstring).

    Computed in float64 and returned in the SAE's dtype, on the CPU.

    Raises:
        ValueError: a tensor holds NaN or infinity, or σ has a non-positive entry (the message names the tensor).
    """
    named = {"W_enc": sae.W_enc, "b_enc": sae.b_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec, "mu": sae.mu,
             "sigma": sae.sigma}  # fmt: skip
    for name, t in named.items():
        if not torch.isfinite(t).all():
            raise ValueError(f"tensor {name!r} of the SAE holds NaN or infinite values: it cannot be exported")
    if (sae.sigma <= 0).any():
        raise ValueError(f"tensor 'sigma' of the SAE has {int((sae.sigma <= 0).sum())} non-positive entries")
    w_enc, b_enc, w_dec, b_dec, mu, sigma = (t.detach().cpu().double() for t in named.values())
    folded = FoldedWeights(
        W_enc=w_enc / sigma,  # (M, C) / (C,): column c divided by σ_c
        b_enc=b_enc,
        W_dec=w_dec * sigma,  # (M, C) * (C,): row i becomes d_i ⊙ σ
        b_dec=sigma * b_dec + mu,
    )
    return FoldedWeights(*(t.to(sae.dtype).contiguous() for t in folded))
