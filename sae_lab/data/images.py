"""Image conversion shared by every stage: any picture → the classifier's 1-channel ink tensor."""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image

# A TU-Berlin PNG is 1111 px square; refuse pictures that would decompress to absurd sizes.
MAX_PIXELS = 64_000_000


class ImageDecodeError(ValueError):
    """A picture could not be read (not an image, truncated, too large)."""


def open_image(data: bytes | str | Image.Image, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Opens PNG/JPEG bytes, a path or a PIL image, fully decoded, with a clear error otherwise."""
    if isinstance(data, Image.Image):
        img = data
    else:
        if isinstance(data, (bytes, bytearray)) and len(data) == 0:
            raise ImageDecodeError("empty image data")
        src = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(src)
                if img.width * img.height > max_pixels:
                    raise ImageDecodeError(
                        f"image is {img.width}x{img.height} pixels, over the limit of {max_pixels} pixels"
                    )
                img.load()
        except ImageDecodeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageDecodeError(f"image too large: {e}") from e
        except Exception as e:  # PIL raises many types for bad data
            raise ImageDecodeError(f"cannot decode image: {type(e).__name__}: {e}") from e
    return img


def to_gray(img: Image.Image) -> Image.Image:
    """Any mode (RGBA, P, 16-bit I;16, float) → 8-bit "L"; transparency composited on white."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8))
    return img.convert("L")


def image_to_tensor(img: Image.Image | np.ndarray, image_size: int) -> torch.Tensor:
    """A sketch (dark strokes on light paper) → (1, S, S) float32 ink in [0, 1] (stroke = 1)."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    img = to_gray(img)
    if img.size != (image_size, image_size):
        # Large, thin-stroked sketches need a box filter or the strokes vanish.
        img = img.resize((image_size, image_size), Image.BOX if img.width > 2 * image_size else Image.BILINEAR)
    ink = 1.0 - np.asarray(img, dtype=np.float32) / 255.0
    peak = float(ink.max())
    if peak > 0.05:  # faint strokes after a big downscale: stretch so the darkest stroke is 1
        ink = ink / peak
    return torch.from_numpy(ink).unsqueeze(0)


def load_image_tensor(data: bytes | str | Image.Image, image_size: int) -> torch.Tensor:
    """Bytes, path or PIL image → (1, S, S) ink tensor; raises ImageDecodeError on bad input."""
    return image_to_tensor(open_image(data), image_size)


def collate_skip_corrupt(items):
    """Default collation after dropping corrupt rows (None); None when the whole batch was corrupt."""
    import torch

    items = [it for it in items if it is not None]
    if not items:
        return None
    return torch.utils.data.default_collate(items)
