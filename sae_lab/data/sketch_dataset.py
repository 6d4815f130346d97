"""SketchDataset: rows of a TU-Berlin-format dataset as ink tensors (with the sketch world's ground truth when
annotated), and the training augmentation it applies. Lightning-free: any stage can read images through it."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from sae_lab.data.export import decode_mask_bits, pool_mask_bits, pool_masks_any, unpack_bits
from sae_lab.data.images import ImageDecodeError, load_image_tensor
from sae_lab.data.world import PRIMITIVES


def erase_rectangle(x: torch.Tensor, area: tuple[float, float] = (0.15, 0.4)) -> torch.Tensor:
    """Cutout on a (1, S, S) ink image: a random rectangle (a share ``area`` of the image, aspect 1/2–2) set to
    blank paper."""
    s1, s2 = x.shape[-2:]
    share = float(torch.empty(()).uniform_(*area))
    aspect = math.exp(float(torch.empty(()).uniform_(-math.log(2), math.log(2))))
    h = min(s1, max(1, round(math.sqrt(share * s1 * s2 * aspect))))
    w = min(s2, max(1, round(math.sqrt(share * s1 * s2 / aspect))))
    top, left = int(torch.randint(0, s1 - h + 1, ())), int(torch.randint(0, s2 - w + 1, ()))
    x = x.clone()
    x[..., top : top + h, left : left + w] = 0.0
    return x


def augment(x: torch.Tensor, erase: float = 0.0) -> torch.Tensor:
    """Training augmentation on a (1, S, S) ink image: small affine, flip, stroke thickness jitter and, with
    probability ``erase``, a cutout rectangle."""
    if torch.rand(()) < 0.5:
        x = x.flip(-1)
    angle = math.radians(float(torch.empty(()).uniform_(-10, 10)))
    scale = float(torch.empty(()).uniform_(0.9, 1.1))
    tx, ty = (float(v) for v in torch.empty(2).uniform_(-0.06, 0.06))
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[cos, -sin, tx], [sin, cos, ty]], dtype=x.dtype)
    grid = F.affine_grid(theta[None], [1, *x.shape], align_corners=False)
    x = F.grid_sample(x[None], grid, align_corners=False, padding_mode="zeros")[0]
    r = float(torch.rand(()))
    if r < 0.25:  # thicker strokes: one-pixel dilation
        x = F.max_pool2d(F.pad(x[None], (0, 1, 0, 1)), 2, stride=1)[0]
    elif r < 0.5:  # thinner strokes: soften the stroke edges
        x = 0.5 * (x - F.max_pool2d(-F.pad(x[None], (0, 1, 0, 1)), 2, stride=1)[0])
    if erase > 0 and float(torch.rand(())) < erase:
        x = erase_rectangle(x)
    return x.clamp_(0, 1)


class SketchDataset(Dataset):
    """Rows of a Hugging Face dataset (image column not decoded) → ink tensors.

    Items are dicts: ``image`` (1, S, S), ``label``, ``index`` (row in the source split) and, with
    ``annotations``, ``primitives`` (P,) multi-hot and ``masks`` (P, S, S) bool. A row whose image
    cannot be decoded yields None (see :func:`collate_skip_corrupt`) with a warning naming it.
    """

    def __init__(
        self,
        hf_dataset,
        image_size: int,
        augment: bool = False,
        annotations: bool = False,
        name: str = "",
        erase: float = 0.0,
    ):
        self.ds = hf_dataset
        self.image_size = image_size
        self.augment, self.erase = augment, erase
        self.annotations = annotations and "primitive_masks" in hf_dataset.column_names
        self.name = name
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        return self.get(i)

    def image(self, i: int) -> torch.Tensor:
        """Row ``i``'s (1, S, S) image alone, never augmented (e.g. to draw an exemplar): no label or mask decoding."""
        return load_image_tensor(self.ds[int(i)]["image"]["bytes"], self.image_size)

    def get(self, i: int, mask_grid: tuple[int, int] | None = None):
        """Item ``i``; with ``mask_grid`` (h, w) and annotations, ``token_masks`` (h·w, P) bool — a token on when any
        pixel of its pooling cell is — replaces the pixel ``masks`` (pooled on the stored bitmask, all primitives in
        one pass)."""
        row = self.ds[int(i)]
        index = int(row.get("row", i))
        try:
            image = load_image_tensor(row["image"]["bytes"], self.image_size)
        except (ImageDecodeError, TypeError, KeyError) as e:
            self.skipped += 1
            warnings.warn(
                f"skipping corrupt image: row {index} of {self.name or 'dataset'} ({e}); "
                f"{self.skipped} skipped so far in this worker",
                stacklevel=2,
            )
            return None
        if self.augment:
            image = augment(image, self.erase)
        item = {"image": image, "label": int(row["label"]), "index": index}
        if self.annotations:
            prim = torch.zeros(len(PRIMITIVES))
            prim[list(row["primitives"])] = 1.0
            bits = decode_mask_bits(row["primitive_masks"]["bytes"])
            item["primitives"] = prim
            if mask_grid is not None and bits.shape[-1] == self.image_size:
                pooled = pool_mask_bits(bits, mask_grid).reshape(-1)
                item["token_masks"] = torch.from_numpy(np.ascontiguousarray(unpack_bits(pooled, len(PRIMITIVES)).T))
                return item
            masks = torch.from_numpy(unpack_bits(bits, len(PRIMITIVES)))
            if masks.shape[-1] != self.image_size:
                masks = F.interpolate(masks[None].float(), size=self.image_size, mode="area")[0] >= 0.25
            item["masks"] = masks
            if mask_grid is not None:
                item["token_masks"] = torch.from_numpy(pool_masks_any(item.pop("masks"), mask_grid))
        return item
