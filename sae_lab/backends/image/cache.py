"""Generated images on disk: one PNG per (backend identity, prompt template, concept, seed, index)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from sae_lab.backends.image.base import ImageBackend
from sae_lab.errors import check_template


def _annotations_chunk(image: Image.Image) -> Any:
    """PNG text chunks for an image's sketch-world annotations (``primitives`` as JSON, ``class``), if any."""
    from PIL.PngImagePlugin import PngInfo

    chunk = PngInfo()
    prims = image.info.get("primitives")
    if prims is not None:
        chunk.add_text("primitives", prims if isinstance(prims, str) else json.dumps(list(prims)))
    if "class" in image.info:
        chunk.add_text("class", str(image.info["class"]))
    return chunk


def image_seed(seed: int, concept: str, index: int) -> int:
    """The generator seed of image ``index`` of ``concept`` under run seed ``seed`` (31 bits, portable)."""
    digest = hashlib.sha256(json.dumps([seed, concept, index]).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class ImageCache:
    """Generated images on disk, one PNG per (backend identity, prompt template, concept, seed, index).

    A concept's images are generated once and reused by every latent that asks for it, and a resumed run
    regenerates nothing that is here. Files are written under a temporary name and renamed.

    Args:
        root: The cache folder (``reports/<run>/line/cache``).
        backend: The image backend.
        template: Prompt template with ``{concept}``.
        seed: Run seed; image ``i`` of a concept is drawn with :func:`image_seed`.
    """

    def __init__(self, root: str | os.PathLike, backend: ImageBackend, template: str, seed: int) -> None:
        check_template(template)  # {concept} and no other placeholder (str.format would raise KeyError later)
        self.root, self.backend, self.template, self.seed = Path(root), backend, template, seed
        self.root.mkdir(parents=True, exist_ok=True)
        self.generated = 0
        """Images this object generated (cache misses)."""

    def key(self, concept: str, index: int) -> str:
        blob = json.dumps([self.backend.identity, self.template, concept, self.seed, index])
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def path(self, concept: str, index: int) -> Path:
        return self.root / f"{self.key(concept, index)}.png"

    def prompt(self, concept: str) -> str:
        return self.template.format(concept=concept)

    def image_seed(self, concept: str, index: int) -> int:
        """The generator seed of image ``index`` of ``concept`` (a subclass may draw from its own seed range)."""
        return image_seed(self.seed, concept, index)

    def missing(self, concepts: Sequence[str], n: int) -> list[tuple[str, int]]:
        return [(c, i) for c in concepts for i in range(n) if not self.path(c, i).is_file()]

    def ensure(self, concepts: Sequence[str], n: int) -> int:
        """Generates (in one backend call) every image of ``concepts`` not cached yet; returns how many it drew."""
        todo = self.missing(concepts, n)
        if not todo:
            return 0
        prompts = [self.prompt(c) for c, _ in todo]
        seeds = [self.image_seed(c, i) for c, i in todo]
        images = self.backend.generate(prompts, seeds)
        made = 0
        for (concept, index), image in zip(todo, images):
            if image is None:
                continue
            path = self.path(concept, index)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            image.save(tmp, format="PNG", pnginfo=_annotations_chunk(image))
            os.replace(tmp, path)
            made += 1
        self.generated += made
        return made

    def load(self, concept: str, n: int) -> list[Image.Image]:
        """The cached images of ``concept`` (those that exist, in index order)."""
        out = []
        for i in range(n):
            path = self.path(concept, i)
            if path.is_file():
                with Image.open(path) as im:
                    im.load()
                    copy = im.copy()
                if isinstance(copy.info.get("primitives"), str):
                    copy.info["primitives"] = json.loads(copy.info["primitives"])
                out.append(copy)
        return out

    def paths(self, concept: str, n: int) -> list[Path]:
        return [p for p in (self.path(concept, i) for i in range(n)) if p.is_file()]
