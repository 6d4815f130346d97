"""Images of the neuron report: exemplar tiles with a token-activation heatmap over the sketch, and sprites.

Tiles are palette PNGs over one palette of every (heat level, ink level) blend, which keeps them small and lets a
sprite reuse its tiles' pixels as they are.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from sae_lab.run.files import RunFiles

TILE = 64
"""Side in pixels of one exemplar image (and of one sprite tile)."""
SPRITE_GAP = 2
"""White pixels between sprite tiles."""
HEAT_LEVELS = 31
"""Heatmap levels of the palette (level 0: no overlay)."""
INK_LEVELS = 8
"""Grey levels of the sketch in the palette."""
_WHITE = HEAT_LEVELS * INK_LEVELS
"""Palette index of the white gaps between sprite tiles."""
# Anchors of an inferno-like colormap (dark purple → red → orange → pale yellow) for the heatmap overlay.
_ANCHORS = np.array([[40, 11, 84], [120, 28, 109], [200, 58, 73], [244, 125, 21], [252, 230, 120]], np.float64)


def _palette() -> np.ndarray:
    """(256, 3) uint8: every (heat level, ink level) blend, then white. Images are palette PNGs over it, which
    keeps them small and lets a sprite reuse its tiles' pixels as they are."""
    heat = np.arange(HEAT_LEVELS)[:, None] / (HEAT_LEVELS - 1)
    ink = np.arange(INK_LEVELS)[None, :] / (INK_LEVELS - 1)
    colour = np.stack([np.interp(heat, np.linspace(0, 1, len(_ANCHORS)), _ANCHORS[:, c]) for c in range(3)], -1)
    alpha = (0.75 * heat)[..., None]  # transparent at 0, so cells without activation fade out smoothly
    paper = 255.0 * (1.0 - 0.15 * ink)[..., None]
    rgb = (paper * (1 - alpha) + colour * alpha) * (1.0 - 0.85 * ink)[..., None]  # strokes stay dark on top
    out = np.full((256, 3), 255, np.uint8)
    out[:_WHITE] = rgb.reshape(-1, 3).clip(0, 255).round().astype(np.uint8)
    return out


PALETTE = _palette()


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of 1-D bilinear upsampling with half-pixel centres (``align_corners=False``)."""
    src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    out = np.zeros((n_out, n_in))
    np.add.at(out, (np.arange(n_out), lo), 1 - frac)
    np.add.at(out, (np.arange(n_out), hi), frac)
    return out


def heatmap_tiles(ink: np.ndarray, maps: np.ndarray, vmax: float) -> np.ndarray:
    """Grey sketches under a semi-transparent activation heatmap, bilinearly upsampled from the token grid.

    Args:
        ink: (n, t, t) ink in [0, 1] (stroke = 1, paper = 0), already at the tile size t.
        maps: (n, H, W) token activations of one latent.
        vmax: activation at the top of the colormap (the latent's largest, so that its tiles compare).

    Returns:
        (n, t, t) uint8 indices into :data:`PALETTE`.
    """
    t = ink.shape[-1]
    rows, cols = _bilinear_matrix(maps.shape[1], t), _bilinear_matrix(maps.shape[2], t)
    scaled = np.asarray(maps, np.float32) / np.float32(max(float(vmax), 1e-12))
    heat = rows.astype(np.float32) @ scaled @ cols.T.astype(np.float32)  # (n, t, t): two small batched matmuls
    heat_level = np.clip(np.ceil(heat * (HEAT_LEVELS - 1) - 0.5), 0, HEAT_LEVELS - 1).astype(np.int64)
    ink_level = np.clip(np.rint(ink * (INK_LEVELS - 1)), 0, INK_LEVELS - 1).astype(np.int64)
    return (heat_level * INK_LEVELS + ink_level).astype(np.uint8)


def sprite(tiles: np.ndarray, columns: int | None = None, gap: int = SPRITE_GAP) -> np.ndarray:
    """Palette tiles (n, t, t) in a grid, row-major, ``columns`` wide (default ⌈√n⌉), white gaps between them."""
    n, t = len(tiles), tiles.shape[1]
    columns = columns or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / columns))
    out = np.full((rows * t + (rows - 1) * gap, columns * t + (columns - 1) * gap), _WHITE, np.uint8)
    for j, img in enumerate(tiles):
        r, c = divmod(j, columns)
        out[r * (t + gap) : r * (t + gap) + t, c * (t + gap) : c * (t + gap) + t] = img
    return out


def save_png(path: Path, indices: np.ndarray) -> None:
    """Save palette indices (h, w) over :data:`PALETTE` as a PNG."""
    img = Image.fromarray(indices, "P")
    img.putpalette(PALETTE.tobytes())
    img.save(path, compress_level=3)  # 2x faster than 6 on these tiles and sprites, files ~5 % larger


def ink_tile(image: Tensor, tile: int = TILE) -> np.ndarray:
    """A (1, S, S) or (S, S) ink image as (tile, tile) float ink, box-filtered (or bilinear) to the tile size."""
    ink = image.detach().float().reshape(image.shape[-2:]).clamp(0, 1).numpy()
    if ink.shape != (tile, tile):
        img = Image.fromarray((ink * 255).round().astype(np.uint8), "L")
        resample = Image.Resampling.BOX if ink.shape[0] > tile else Image.Resampling.BILINEAR
        ink = np.asarray(img.resize((tile, tile), resample), np.float32) / 255
    return ink


def write_exemplar_images(
    root: Path,
    latents: list[int],
    positions: Tensor,
    z_max: Tensor,
    maps: Tensor,
    grid: tuple[int, int],
    load_image: Callable[[int], Tensor],
    on_latent: Callable[[], None] | None = None,
    workers: int = 4,
) -> dict[int, tuple[str, list[str]]]:
    """Per latent: one PNG per exemplar and a sprite of all of them, heatmaps on the latent's own scale.

    Args:
        root: the staging folder.
        latents: latents to draw.
        positions: (M, N) dataset positions of the exemplars (−1 pads).
        z_max: (M, N) their z_max (a tile is drawn only where it is > 0).
        maps: (M, N, T) their token activation maps.
        grid: (H, W) of the token grid.
        load_image: position → (1, S, S) ink image.
        on_latent: called after each latent (progress).
        workers: threads encoding PNGs.

    Returns:
        {latent: (sprite path, [exemplar paths, best first])}, paths relative to ``root``.
    """
    cache: dict[int, np.ndarray] = {}  # position → tile-sized ink: bounded by the distinct exemplar images

    def ink(pos: int) -> np.ndarray:
        if pos not in cache:
            cache[pos] = ink_tile(load_image(pos))
        return cache[pos]

    out: dict[int, tuple[str, list[str]]] = {}
    h, w = grid
    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending = []
        for i in latents:
            keep = ((positions[i] >= 0) & (z_max[i] > 0)).nonzero().squeeze(1).tolist()
            if keep:
                images = np.stack([ink(int(positions[i, j])) for j in keep])
                amaps = maps[i, keep].reshape(len(keep), h, w).numpy()
                tiles = heatmap_tiles(images, amaps, float(z_max[i, keep].max()))
                paths = [RunFiles.exemplar(i, rank) for rank in range(len(keep))]
                (root / paths[0]).parent.mkdir(parents=True, exist_ok=True)
                (root / RunFiles.sprite(i)).parent.mkdir(exist_ok=True)
                pending += [pool.submit(save_png, root / p, tile) for p, tile in zip(paths, tiles)]
                pending.append(pool.submit(save_png, root / RunFiles.sprite(i), sprite(tiles)))
                out[i] = (RunFiles.sprite(i), paths)
            if len(pending) > 256:
                for f in pending:
                    f.result()
                pending = []
            if on_latent:
                on_latent()
        for f in pending:
            f.result()
    return out
