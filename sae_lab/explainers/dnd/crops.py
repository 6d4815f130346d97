"""DnD's attention crops: where in an image a latent fires, cut out as new images (Bai et al., "Step 1").

The latent's token map is upsampled to the image, binarised at its Otsu threshold (scikit-image), and each
connected region's bounding box is a crop candidate. Boxes are taken largest first; a box is kept when its IoU with
every kept box is ≤ 0.5 and its IoU with the whole image is < 0.8 (a crop that is nearly the image adds nothing),
up to a few per image. A crop is resized back to the image's size, so the classifier sees it as a whole image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from sae_lab.models.tokens import fmap_to_tokens

MAX_IOU_KEPT = 0.5
"""A box overlapping a kept box more than this is dropped."""
MAX_IOU_IMAGE = 0.8
"""A box is dropped unless its IoU with the whole image is below this."""


class Box(NamedTuple):
    """A pixel box, ends exclusive (PIL's ``crop`` order)."""

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def area(self) -> int:
        return max(0, self.x2 - self.x1) * max(0, self.y2 - self.y1)


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when both are empty)."""
    w = max(0, min(a.x2, b.x2) - max(a.x1, b.x1))
    h = max(0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = w * h
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def crop_boxes(heat: np.ndarray, max_crops: int = 4, max_iou_kept: float = MAX_IOU_KEPT,
               max_iou_image: float = MAX_IOU_IMAGE) -> list[Box]:  # fmt: skip
    """Crop boxes of one activation map at image resolution, largest first.

    Args:
        heat: (H, W) float activation map (the latent's token map upsampled to the image).
        max_crops: Most boxes returned.
        max_iou_kept: A box whose IoU with a kept box exceeds this is dropped.
        max_iou_image: A box is kept only when its IoU with the whole image is below this.

    Returns:
        Boxes of the connected regions above the Otsu threshold (8-connected), largest area first (ties: the order
        scikit-image labels them, top to bottom), after the IoU rules; none for a flat map.
    """
    from skimage.filters import threshold_otsu
    from skimage.measure import label, regionprops

    heat = np.asarray(heat, dtype=np.float64)
    if heat.ndim != 2:
        raise ValueError(f"heat must be a 2-d map, got shape {heat.shape}")
    if max_crops < 1 or not np.isfinite(heat).all() or heat.max() <= heat.min():
        return []
    mask = heat > threshold_otsu(heat)
    regions = regionprops(label(mask, connectivity=2))
    boxes = [Box(r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2]) for r in regions]  # bbox: (row0, col0, row1, col1)
    boxes.sort(key=lambda b: -b.area)  # stable: equal areas keep the labelling order
    whole = Box(0, 0, heat.shape[1], heat.shape[0])
    kept: list[Box] = []
    for box in boxes:
        if len(kept) == max_crops:
            break
        if box_iou(box, whole) >= max_iou_image or any(box_iou(box, k) > max_iou_kept for k in kept):
            continue
        kept.append(box)
    return kept


def upsample(token_map: Tensor, size: int) -> np.ndarray:
    """(h, w) token map → (size, size) float64 map, bilinear (the pixel grid's centres, ``align_corners=False``)."""
    up = F.interpolate(token_map[None, None].double(), size=(size, size), mode="bilinear", align_corners=False)
    return up[0, 0].numpy()


@torch.no_grad()
def latent_maps(net, sae, x: Tensor, latents: Sequence[int], batch_size: int = 64) -> tuple[Tensor, Tensor, Tensor]:
    """One classifier + SAE pass: the chosen latents' token maps and every latent's pooled activations.

    Args:
        net: The classifier network (``features(x) -> (B, C, H, W)``).
        sae: The SAE (``standardize``, ``dense_acts``); activations are the dense code ReLU(pre).
        x: (B, 1, S, S) ink images.
        latents: The L latents whose maps are kept.

    Returns:
        maps (B, L, H, W), z_max (B, M) and z_avg (B, M), float32 on the CPU.
    """
    device = next(sae.parameters()).device
    idx = torch.as_tensor(list(latents), dtype=torch.long, device=device)
    maps, z_max, z_avg = [], [], []
    for chunk in x.split(batch_size):
        fmap = net.features(chunk.to(device)).to(sae.dtype)
        b, _, h, w = fmap.shape
        acts = sae.dense_acts(sae.standardize(fmap_to_tokens(fmap))).reshape(b, h * w, -1)
        z_max.append(acts.amax(1).float().cpu())
        z_avg.append(acts.mean(1).float().cpu())
        maps.append(acts[:, :, idx].reshape(b, h, w, len(idx)).permute(0, 3, 1, 2).float().cpu())
    if not maps:
        m = int(sae.W_dec.shape[0])
        return torch.zeros(0, len(idx), 1, 1), torch.zeros(0, m), torch.zeros(0, m)
    return torch.cat(maps), torch.cat(z_max), torch.cat(z_avg)


def crop_image(image: Image.Image, box: Box, masks: np.ndarray | None = None,
               primitive_names: Sequence[str] | None = None) -> Image.Image:  # fmt: skip
    """``box`` of ``image`` resized back to the image's size, carrying the annotations that still apply.

    Args:
        image: The parent image (its ``info`` may hold sketch-world ``primitives`` and ``class``).
        box: The crop.
        masks: (P, H, W) bool primitive masks of the parent, when known: the crop is annotated with the primitives
            that have a pixel inside the box. Without masks it keeps the parent's primitives.
        primitive_names: The names of the masks' P primitives.
    """
    crop = image.crop(tuple(box)).resize(image.size, Image.BILINEAR)
    crop.info = {}
    if masks is not None and primitive_names is not None:
        inside = masks[:, box.y1 : box.y2, box.x1 : box.x2].reshape(len(masks), -1).any(1)
        crop.info["primitives"] = [primitive_names[p] for p in np.flatnonzero(inside)]
    elif "primitives" in image.info:
        crop.info["primitives"] = list(image.info["primitives"])
    elif "class" in image.info:  # no primitives known: the class is all the offline backends can read
        crop.info["class"] = image.info["class"]
    return crop


def probe_masks(dataset, probe, idx: Sequence[int], n_primitives: int) -> dict[int, np.ndarray]:
    """(P, S, S) bool primitive masks of probe images, read from their split by row, so a crop names only what it
    shows (sketch world). An image is left out when its row holds no masks of the probe's size and count, or its
    pixels differ from the probe's (the split is not the one the probe set was drawn from).

    Args:
        dataset: The probe's split (items with ``image`` (1, S, S) and, with annotations, ``masks`` (P, S, S)).
        probe: The :class:`~sae_lab.explainers.probe.ProbeSet`.
        idx: Probe image indices.
        n_primitives: P.
    """
    size = probe.images.shape[-1]
    out: dict[int, np.ndarray] = {}
    for i in idx:
        item = dataset[int(probe.rows[i])]
        masks = None if item is None else item.get("masks")
        if masks is None or tuple(masks.shape) != (n_primitives, size, size):
            continue
        if torch.equal((item["image"][0].clamp(0, 1) * 255).round().to(torch.uint8), probe.images[i]):
            out[i] = masks.numpy().astype(bool)
    return out


__all__ = [
    "MAX_IOU_IMAGE",
    "MAX_IOU_KEPT",
    "Box",
    "box_iou",
    "crop_boxes",
    "crop_image",
    "latent_maps",
    "probe_masks",
    "upsample",
]
