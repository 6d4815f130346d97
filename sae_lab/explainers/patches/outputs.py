"""Patches as images: the crop given to the perception backend (annotated with the primitives inside it), the
PNGs of ``reports/<run>/patches/<latent>/`` and the patch's overlap with a primitive's mask.

Which primitives a crop shows is read from the sketch world's per-primitive masks of the probe image (the
dataset rows carry them: :meth:`~sae_lab.data.sketch.SketchDataset.get`, exact and read only for the occluded
images). A primitive is inside a patch when at least :data:`VISIBLE` of its mask pixels lie in the box.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from sae_lab.run.io import atomic_write_bytes

VISIBLE = 0.5
"""Share of a primitive's mask pixels inside a box for the primitive to count as shown by the patch."""
PNG_SIDE = 128
"""Maps and patches are enlarged by an integer factor (nearest neighbour) to about this side."""

Box = tuple[int, int, int, int]


def load_masks(loaded, split: str, rows: Sequence[int], batch_size: int = 256) -> dict[int, Tensor] | None:
    """The (P, S, S) bool primitive masks of the given rows of the probe set's split; None without annotations."""
    from sae_lab.report.inputs import open_split

    _, dataset, _, names = open_split(loaded.classifier, None, split, batch_size, loaded.roots)
    if names is None or not getattr(dataset, "annotations", False):
        return None
    out = {}
    for r in sorted(set(int(r) for r in rows)):
        item = dataset.get(r)
        if item is not None and "masks" in item:
            out[r] = item["masks"].bool()
    return out


def inside(masks: Tensor | None, box: Box, names: Sequence[str]) -> list[str]:
    """The primitives with at least :data:`VISIBLE` of their mask pixels in ``box`` (world order)."""
    if masks is None:
        return []
    x0, y0, x1, y1 = box
    total = masks.flatten(1).sum(1)
    within = masks[:, y0:y1, x0:x1].flatten(1).sum(1)
    keep = (total > 0) & (within >= VISIBLE * total)
    return [names[int(i)] for i in keep.nonzero().squeeze(1).tolist()]


def crop_image(image: Tensor, box: Box, primitives: list[str] | None) -> Image.Image:
    """The patch as a grey sketch (dark strokes on white), with ``info["primitives"]`` for the offline backend
    (no ``class``: a patch is a part, not a class image)."""
    x0, y0, x1, y1 = box
    img = Image.fromarray(255 - image[y0:y1, x0:x1].numpy(), mode="L")
    if primitives is not None:
        img.info["primitives"] = list(primitives)
    return img


def _scale(size: int) -> int:
    return max(1, round(PNG_SIDE / max(size, 1)))


def png_bytes(img: Image.Image, scale: int) -> bytes:
    import io

    buf = io.BytesIO()
    img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


def heat_png(image: Tensor, heat: Tensor, box: Box) -> bytes:
    """The sketch with the occlusion map in red (drop / largest drop; rises only) and the patch box in blue."""
    paper = 255.0 - image.float()
    level = heat.clamp_min(0) / heat.max().clamp_min(1e-12)
    rgb = torch.stack([paper, paper * (1 - 0.8 * level), paper * (1 - 0.8 * level)], -1)
    x0, y0, x1, y1 = box
    blue = torch.tensor([40.0, 90.0, 230.0])
    rgb[y0, x0:x1] = rgb[y1 - 1, x0:x1] = blue
    rgb[y0:y1, x0] = rgb[y0:y1, x1 - 1] = blue
    img = Image.fromarray(rgb.round().clamp(0, 255).to(torch.uint8).numpy(), mode="RGB")
    return png_bytes(img, _scale(image.shape[-1]))


def write_latent_pngs(folder: Path, rel: str, images: list[Tensor], heats: list[Tensor], boxes: list[Box],
                      patches: list[Image.Image]) -> tuple[list[str], list[str]]:  # fmt: skip
    """``map-<rank>.png`` and ``patch-<rank>.png`` per top image in ``folder``; their paths under ``rel``."""
    maps, crops = [], []
    for rank, (image, heat, box, patch) in enumerate(zip(images, heats, boxes, patches)):
        atomic_write_bytes(folder / f"map-{rank}.png", heat_png(image, heat, box))
        atomic_write_bytes(folder / f"patch-{rank}.png", png_bytes(patch, _scale(image.shape[-1])))
        maps.append(f"{rel}/map-{rank}.png")
        crops.append(f"{rel}/patch-{rank}.png")
    return maps, crops


def mask_box(mask: Tensor) -> Box | None:
    """The bounding box of a (S, S) bool mask; None when it is empty."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(ys) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def patch_iou(box: Box, mask: Tensor) -> float | None:
    """IoU of a patch box with the bounding box of a primitive's mask (strokes are thin: a pixel IoU with the
    strokes themselves would be small even for a perfect box); None when the primitive is not in the image."""
    target = mask_box(mask)
    return None if target is None else box_iou(box, target)


def mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


__all__ = ["VISIBLE", "box_iou", "crop_image", "heat_png", "inside", "load_masks", "mask_box", "patch_iou",
           "write_latent_pngs"]  # fmt: skip
