"""The perception interfaces (concept presence, image embeddings, captions) and the input checks they share."""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from sae_lab.backends.perception.cache import ShardedStore

logger = logging.getLogger(__name__)

# 16- and 32-bit greyscale and float modes: PIL's convert("RGB") clips them instead of rescaling.
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def image_key(image: Image.Image) -> str:
    """The content hash of an image: sha256 of its mode, size and pixel bytes (annotations do not count)."""
    digest = hashlib.sha256(f"{image.mode}|{image.size[0]}x{image.size[1]}|".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy for a vision model: 16-bit and float images rescaled, transparency composited on white."""
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE_MODES:
        pixels = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            peak = 1.0 if pixels.size and pixels.max() <= 1.0 else 255.0  # floats in [0, 1] or already 8-bit scale
        else:
            peak = 65535.0 if pixels.size and pixels.max() > 255 else 255.0  # "I" also holds 8-bit data
        grey = np.clip(np.rint(pixels * (255.0 / peak)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # sketches are drawn on white paper
        return Image.alpha_composite(paper, rgba).convert("RGB")
    return image.convert("RGB")


def check_images(images: Sequence[Image.Image]) -> list[Image.Image]:
    """``images`` as a list, each checked to be a non-empty PIL image."""
    out = list(images)
    for i, image in enumerate(out):
        if not isinstance(image, Image.Image):
            raise TypeError(f"image {i} is a {type(image).__name__}, not a PIL image")
        if image.size[0] < 1 or image.size[1] < 1:
            raise ValueError(f"image {i} is empty ({image.size[0]}x{image.size[1]})")
    return out


def check_concepts(concepts: Sequence[str]) -> list[str]:
    """``concepts`` as a list of stripped texts.

    Raises:
        ValueError: no concepts, a blank one, or duplicates (named).
    """
    if isinstance(concepts, str):
        raise TypeError("concepts must be a sequence of texts, not one string")
    out = [str(c).strip() for c in concepts]
    if not out:
        raise ValueError("the concept list is empty")
    if any(not c for c in out):
        raise ValueError(f"concept {out.index('')} is blank")
    duplicates = sorted(c for c, n in Counter(out).items() if n > 1)
    if duplicates:
        raise ValueError(f"duplicated concepts: {', '.join(repr(c) for c in duplicates)}")
    return out


def unit_rows(x: np.ndarray) -> np.ndarray:
    """(N, D) rows scaled to unit length in float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


class PerceptionBackend(ABC):
    """Concept presence P(c | image) and image embeddings for PIL images.

    Subclasses set ``name`` (a valid spec) and count their work in ``images_embedded`` (images that went through
    the model), ``texts_embedded`` and ``cache_hits`` (images found in the on-disk cache).
    """

    name: str = "abstract"

    def __init__(self) -> None:
        self.images_embedded = 0
        self.texts_embedded = 0
        self.cache_hits = 0

    @property
    @abstractmethod
    def identity(self) -> str:
        """The spec and every setting that changes a result (part of every cache key built on this backend)."""

    @abstractmethod
    def presence(self, images: Sequence[Image.Image], concepts: Sequence[str]) -> np.ndarray:
        """(N, C) float32 presence in [0, 1] of concept ``c`` in image ``n``.

        Raises:
            ValueError: an empty concept list or duplicated concepts.
        """

    @abstractmethod
    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, D) float32 unit vectors (offline: a zero row for an image without primitives)."""

    def similarity(self, a: Sequence[Image.Image], b: Sequence[Image.Image]) -> np.ndarray:
        """(Na, Nb) similarity of every image of ``a`` to every image of ``b`` (cosine of the embeddings)."""
        return self.embed(a) @ self.embed(b).T

    def known(self, concept: str) -> bool:
        """Whether the backend can score ``concept`` at all (a VLM reads any text)."""
        return True

    def counters(self) -> dict[str, int]:
        """Work done so far, for cost reporting."""
        return {"images_embedded": self.images_embedded, "texts_embedded": self.texts_embedded,
                "cache_hits": self.cache_hits}  # fmt: skip

    def close(self) -> None:
        """Release models or connections."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(identity={self.identity!r})"


class Captioner(ABC):
    """One caption per image; None where an image failed (the caller counts and skips it).

    The base class de-duplicates images by content, serves cached captions from ``store`` (when the subclass
    gives one) and counts ``captions`` (new captions made), ``cache_hits`` and ``failures``. Subclasses set
    ``name`` and implement :meth:`_caption`.
    """

    name: str = "abstract"

    def __init__(self, store: ShardedStore | None = None) -> None:
        self.store = store
        self.captions = 0
        self.cache_hits = 0
        self.failures = 0

    @property
    def identity(self) -> str:
        """The spec and every setting that changes a caption (part of the cache key)."""
        return self.name

    @abstractmethod
    def _caption(self, images: list[Image.Image]) -> list[str | None]:
        """Captions of distinct, uncached images, in order; None where one failed."""

    def caption(self, images: Sequence[Image.Image]) -> list[str | None]:
        """A caption per image, in order; None where one failed."""
        images = check_images(images)
        if self.store is None:
            out = self._caption(images) if images else []
            self._count(out)
            return out
        keys = [image_key(im) for im in images]
        cached = self.store.get(keys)
        todo: dict[str, Image.Image] = {}
        for key, image in zip(keys, images):
            if key not in cached and key not in todo:
                todo[key] = image
        self.cache_hits += sum(key in cached for key in keys)
        if todo:
            made = self._caption(list(todo.values()))
            self._count(made)
            fresh = {k: c for k, c in zip(todo, made) if c is not None}
            if fresh:
                self.store.put(list(fresh), list(fresh.values()))
            cached.update(fresh)
        return [cached.get(key) for key in keys]

    def _count(self, made: list[str | None]) -> None:
        self.captions += sum(c is not None for c in made)
        self.failures += sum(c is None for c in made)

    def counters(self) -> dict[str, int]:
        """Work done so far, for cost reporting."""
        return {"captions": self.captions, "cache_hits": self.cache_hits, "failures": self.failures}

    def close(self) -> None:
        """Release models or connections."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(identity={self.identity!r})"
