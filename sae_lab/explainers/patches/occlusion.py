"""Occlusion shared across latents: each image's occluded variants go through classifier + SAE once and give the
drop of every asked latent's ``z_max`` at once.

Zhao et al. (arXiv 2310.10708) slide an occluder over each top image of a neuron and keep the region whose
occlusion lowers the neuron most. Run per neuron, an image in several neurons' top lists is occluded once per
neuron; here it is occluded once, and one forward pass scores every latent that asked for it.

Shapes: S image side, s occluder side, Y × X occluder positions, L latents scored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from sae_lab.models.tokens import fmap_to_tokens

Scorer = Callable[[Tensor], Tensor]
"""(B, 1, S, S) ink in [0, 1] → (B, L) per-image ``z_max`` of the scored latents."""


def positions(image_size: int, occluder: int, stride: int) -> list[int]:
    """Top-left offsets of the occluder along one axis: every ``stride`` pixels, plus one flush with the far edge.

    Raises:
        ValueError: ``occluder`` larger than the image or a ``stride`` below 1 (naming the setting).
    """
    if occluder > image_size or occluder < 1:
        raise ValueError(f"occluder must be in [1, {image_size}] px (the image side), got {occluder}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    out = list(range(0, image_size - occluder + 1, stride))
    if out[-1] != image_size - occluder:
        out.append(image_size - occluder)
    return out


def occluded_variants(image: Tensor, occluder: int, offsets: Sequence[int]) -> Tensor:
    """Every occlusion of one image, row-major over (y, x) offsets.

    Args:
        image: (1, S, S) ink in [0, 1].
        occluder: side s.
        offsets: positions along each axis (:func:`positions`).

    Returns:
        (Y·X, 1, S, S): the image with a paper-coloured (ink 0) square at each position.
    """
    n = len(offsets)
    out = image.unsqueeze(0).repeat(n * n, 1, 1, 1)
    for i, y in enumerate(offsets):
        for j, x in enumerate(offsets):
            out[i * n + j, :, y : y + occluder, x : x + occluder] = 0.0
    return out


class SaeScorer:
    """The real scorer: classifier features → standardised tokens → the asked latents' dense activations
    ReLU(pre) → max over each image's tokens (the probe set's ``z_max``; only the asked encoder rows are used).

    Args:
        net: the classifier's network (``features``).
        sae: the SAE.
        latents: the L latents to score.
    """

    def __init__(self, net, sae, latents: Sequence[int]) -> None:
        self.net, self.sae = net, sae
        idx = torch.as_tensor(list(latents), dtype=torch.long, device=sae.W_enc.device)
        self.W_enc, self.b_enc = sae.W_enc[idx], sae.b_enc[idx]

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        fmap = self.net.features(x.to(self.W_enc.device)).to(self.sae.dtype)
        tokens = self.sae.standardize(fmap_to_tokens(fmap))
        acts = torch.relu(torch.addmm(self.b_enc, tokens - self.sae.b_dec, self.W_enc.t()))
        return acts.reshape(len(x), -1, len(self.b_enc)).amax(1).float().cpu()


class Occlusion(NamedTuple):
    """The occlusion of a set of images for a set of latents."""

    base: Tensor
    """(n, L) ``z_max`` of each unoccluded image."""
    drops: Tensor
    """(n, L, Y, X) ``base − z_max`` with the occluder at each position (positive: occluding lowers it)."""
    offsets: list[int]
    """Occluder offsets along each axis."""
    occluder: int
    forward_images: int
    """Images that went through classifier + SAE (variants and originals)."""


def inked_positions(images: Tensor, occluder: int, offsets: Sequence[int]) -> Tensor:
    """(n, Y·X) bool, row-major: whether the occluder at each position covers some ink of each (n, S, S) image."""
    return torch.stack(
        [images[:, y : y + occluder, x : x + occluder].flatten(1).amax(1) > 0 for y in offsets for x in offsets], 1
    )


@torch.no_grad()
def occlude(score: Scorer, images: Tensor, occluder: int, stride: int, batch_size: int = 256,
            skip_blank: bool = True) -> Occlusion:  # fmt: skip
    """Occludes every image once at every position and scores all latents on each variant.

    An occluder over bare paper leaves the image as it was, so its drop is exactly 0 for every latent; with
    ``skip_blank`` such variants are not sent through the network (about a quarter of the positions on sketches).

    Args:
        score: the scorer (:class:`SaeScorer`, or a planted one in tests).
        images: (n, S, S) uint8 ink (0 paper … 255 stroke).
        occluder: side s of the square in pixels.
        stride: step in pixels.
        batch_size: variants per forward pass (an image's variants may span passes).
        skip_blank: leave out the variants whose occluder covers no ink (their drop is 0).
    """
    size = int(images.shape[-1])
    offsets = positions(size, occluder, stride)
    ink = images.float().div(255.0).unsqueeze(1)
    n_pos = len(offsets) ** 2
    inked = (
        inked_positions(images, occluder, offsets) if skip_blank else torch.ones(len(images), n_pos, dtype=torch.bool)
    )
    pending: list[Tensor] = []
    outputs: list[Tensor] = []

    def flush(final: bool) -> None:  # full batches only, until the last
        batch = torch.cat(pending)
        pending.clear()
        full = len(batch) if final else len(batch) // batch_size * batch_size
        outputs.extend(score(part) for part in batch[:full].split(batch_size))
        if full < len(batch):
            pending.append(batch[full:])

    for i in range(len(ink)):  # the original first, then its occlusions that change it
        pending.append(torch.cat([ink[i : i + 1], occluded_variants(ink[i], occluder, offsets)[inked[i]]]))
        if sum(len(p) for p in pending) >= batch_size:
            flush(final=False)
    if pending:
        flush(final=True)
    z = torch.cat(outputs)  # (n + Σ inked, L)
    counts = (inked.sum(1) + 1).tolist()
    base = torch.stack([part[0] for part in z.split(counts)])  # (n, L)
    full = base[:, None].repeat(1, n_pos, 1)  # blank positions: the original's activations, drop 0
    for i, part in enumerate(z.split(counts)):
        full[i, inked[i]] = part[1:]
    drops = (base[:, None] - full).permute(0, 2, 1).reshape(len(ink), -1, len(offsets), len(offsets))
    return Occlusion(base, drops, offsets, occluder, len(z))


class PairDrops(NamedTuple):
    """The occlusion maps of (latent, image) pairs from one shared occlusion of their images."""

    drops: dict[tuple[int, int], Tensor]
    """(latent, image index) → (Y, X) drops of that latent on that image."""
    offsets: list[int]
    forward_images: int
    """Images that went through classifier + SAE: each distinct image's variants once."""
    images: int
    """Distinct images occluded."""


def occlude_pairs(score: Scorer, images: Tensor, tops: dict[int, list[int]], latents: Sequence[int], occluder: int,
                  stride: int, batch_size: int = 256, max_floats: int = 1 << 24) -> PairDrops:  # fmt: skip
    """Occludes every image some latent has among its top images once, for all latents at once, and keeps the maps
    of the (latent, image) pairs asked for.

    Images go in blocks small enough that a block's (images, L, Y, X) drops stay under ``max_floats``.

    Args:
        score: scores ``latents`` (in that order) on a batch.
        images: (N, S, S) uint8 ink; ``tops`` index into it.
        tops: latent → its image indices.
        latents: the scored latents, the scorer's column order.
    """
    column = {int(i): c for c, i in enumerate(latents)}
    users: dict[int, list[int]] = {}
    for i, js in tops.items():
        for j in js:
            users.setdefault(int(j), []).append(int(i))
    used = sorted(users)
    n_pos = len(positions(int(images.shape[-1]), occluder, stride)) ** 2
    block = max(1, min(len(used), max_floats // max(1, len(column) * n_pos)))
    out: dict[tuple[int, int], Tensor] = {}
    forward, offsets = 0, positions(int(images.shape[-1]), occluder, stride)
    for start in range(0, len(used), block):
        part = used[start : start + block]
        occ = occlude(score, images[part], occluder, stride, batch_size)
        forward += occ.forward_images
        for b, j in enumerate(part):
            for i in users[j]:
                out[(i, j)] = occ.drops[b, column[i]].clone()
    return PairDrops(out, offsets, forward, len(used))


def patch_box(drops: Tensor, offsets: Sequence[int], occluder: int, keep: float = 0.5) -> tuple[int, int, int, int]:
    """The patch of one (latent, image): the bounding box of the occluder squares whose drop reaches ``keep``
    times the largest drop; the whole image when no occlusion lowers the latent.

    Args:
        drops: (Y, X) drops of one latent on one image.

    Returns:
        (x0, y0, x1, y1) pixel box, x1 and y1 exclusive.
    """
    peak = float(drops.max())
    size = offsets[-1] + occluder
    if not peak > 0:
        return 0, 0, size, size
    ys, xs = torch.nonzero(drops >= keep * peak, as_tuple=True)
    y0, x0 = offsets[int(ys.min())], offsets[int(xs.min())]
    y1, x1 = offsets[int(ys.max())] + occluder, offsets[int(xs.max())] + occluder
    return x0, y0, x1, y1


def pixel_map(drops: Tensor, offsets: Sequence[int], occluder: int) -> Tensor:
    """(S, S) heat map of one (latent, image): each pixel's mean drop over the occluder squares covering it."""
    size = offsets[-1] + occluder
    total = torch.zeros(size, size)
    count = torch.zeros(size, size)
    for i, y in enumerate(offsets):
        for j, x in enumerate(offsets):
            total[y : y + occluder, x : x + occluder] += float(drops[i, j])
            count[y : y + occluder, x : x + occluder] += 1
    return total / count.clamp_min(1)


__all__ = ["Occlusion", "PairDrops", "SaeScorer", "Scorer", "inked_positions", "occlude", "occlude_pairs", "occluded_variants", "patch_box",
           "pixel_map", "positions"]  # fmt: skip
