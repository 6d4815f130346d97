"""Feature map ⇄ tokens: the one layout every stage uses (training, statistics, knockout, ``why``).

A map (B, C, H, W) becomes tokens (B·H·W, C): an image's H·W tokens are contiguous and in row-major
order, so ``tokens.view(B, H·W, C)`` groups them by image and token ``h·W + w`` is position (h, w).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor


def fmap_to_tokens(fmap: Tensor) -> Tensor:
    """(B, C, H, W) map → (B·H·W, C) tokens, an image's tokens contiguous and in row-major order."""
    return fmap.permute(0, 2, 3, 1).reshape(-1, fmap.shape[1])


def tokens_to_fmap(tokens: Tensor, shape: Sequence[int]) -> Tensor:
    """Inverse of :func:`fmap_to_tokens`.

    Args:
        tokens: (B·H·W, C') tokens, C' may differ from the map's C (e.g. latent codes).
        shape: (B, C, H, W) of the map the tokens came from; only B, H and W are used.

    Returns:
        (B, C', H, W) map (a view of ``tokens`` when they are contiguous).
    """
    b, _, h, w = shape
    return tokens.reshape(b, h, w, tokens.shape[-1]).permute(0, 3, 1, 2)
