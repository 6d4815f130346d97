"""The sketch world's exact perception: an image's annotations (its primitives and class), read as Network
Dissection reads Broden's masks, and concept texts mapped to primitives and classes by name and synonym.

Annotations live in ``image.info``: ``"primitives"`` (a list of names, or its JSON text as a PNG text chunk
carries it) and ``"class"`` (a class name). ``ProbeSet.pil`` sets both; the renderer backend sets the primitives
it drew and the image cache keeps them in its PNGs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image

from sae_lab.backends.perception.base import Captioner, PerceptionBackend, check_concepts, check_images, unit_rows
from sae_lab.data.world import CLASSES, PRIMITIVES, SYNONYMS

# The same word patterns as sae_lab.data.world.primitives_in_text, without its cap of three primitives (a drawing
# budget; a concept naming four must require all four). A test checks that the two agree.
_PRIMITIVE_RE = {
    p: re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(ws, key=len, reverse=True)) + r")\b", re.I)
    for p, ws in SYNONYMS.items()
}
_CLASS_RE = {c: re.compile(r"\b" + re.escape(c) + r"\b", re.I) for c in sorted(CLASSES, key=len, reverse=True)}
_NOUNS = {"arc": "an arc", "dots": "dots", "hatching": "hatching", "spokes": "spokes"}  # others: "a <name>"
WORLD_HASH = hashlib.sha256(json.dumps([PRIMITIVES, CLASSES, SYNONYMS]).encode()).hexdigest()[:12]


class ConceptParse(NamedTuple):
    """What a concept text names in the sketch world."""

    classes: tuple[str, ...]
    """Class names it contains, e.g. ``("sun",)``."""
    primitives: tuple[str, ...]
    """Primitives it names outside those class names, by name or synonym, in world order."""

    @property
    def known(self) -> bool:
        return bool(self.classes or self.primitives)


def parse_concept(text: str) -> ConceptParse:
    """The classes and primitives ``text`` names ("sun" → class sun; "rays and a ring" → spokes, circle)."""
    classes = [c for c, pattern in _CLASS_RE.items() if pattern.search(text)]
    rest = text
    for c in classes:
        rest = _CLASS_RE[c].sub(" ", rest)  # "night sky" must not also read as a primitive word
    prims = [p for p in PRIMITIVES if _PRIMITIVE_RE[p].search(rest)]
    return ConceptParse(tuple(c for c in CLASSES if c in classes), tuple(prims))


@dataclass(frozen=True)
class Annotation:
    """An image's ground truth."""

    primitives: frozenset[str]
    """The primitives drawn in it."""
    cls: str | None
    """Its class name, or None (a rendered prompt has none)."""


def annotation(image: Image.Image, index: int = 0) -> Annotation:
    """The annotations of ``image`` (``index`` names it in errors).

    Raises:
        ValueError: no ``primitives`` and no known ``class`` in ``image.info``, or unknown primitive names.
    """
    prims = image.info.get("primitives")
    cls = image.info.get("class")
    cls = str(cls) if cls not in (None, "") else None
    if prims is None:
        if cls not in CLASSES:
            raise ValueError(
                f"image {index} has no sketch-world annotations (image.info['primitives'] / ['class']); the offline "
                "perception backend reads them (ProbeSet.pil and the renderer backend set them; renderer images "
                "cached before they carried annotations must be drawn again)"
            )
        return Annotation(frozenset(CLASSES[cls]), cls)
    if isinstance(prims, (str, bytes)):
        text = prims.decode() if isinstance(prims, bytes) else prims
        prims = json.loads(text) if text.lstrip().startswith("[") else [p for p in text.split(",") if p.strip()]
    names = frozenset(str(p).strip() for p in prims)
    unknown = sorted(names - set(PRIMITIVES))
    if unknown:
        raise ValueError(
            f"image {index} is annotated with unknown primitives {unknown}; known: {', '.join(PRIMITIVES)}"
        )
    return Annotation(names, cls)


def annotations(images: Sequence[Image.Image]) -> list[Annotation]:
    return [annotation(im, i) for i, im in enumerate(check_images(images))]


class OfflinePerception(PerceptionBackend):
    """Exact presence from annotations: 1 where the image shows everything the concept names, else 0.

    A primitive is present iff the image has it; a class name iff the image is of that class (an image without a
    class: iff it has all the class's primitives); a text naming several things iff all are present; a text that
    names nothing the world knows is 0 everywhere (:meth:`known` tells). Embeddings are unit multi-hots over the
    primitives; :meth:`similarity` is the Jaccard index of two images' primitive sets (1 for two empty sets).
    """

    name = "offline"

    @property
    def identity(self) -> str:
        return f"offline(world={WORLD_HASH})"

    def known(self, concept: str) -> bool:
        return parse_concept(concept).known

    def presence(self, images: Sequence[Image.Image], concepts: Sequence[str]) -> np.ndarray:
        parses = [parse_concept(c) for c in check_concepts(concepts)]
        notes = annotations(images)
        self.images_embedded += len(notes)
        hot = self._multi_hot(notes).astype(bool)
        classes = np.array([n.cls or "" for n in notes], dtype=object)
        out = np.zeros((len(notes), len(parses)), np.float32)
        for j, parse in enumerate(parses):
            if not parse.known:
                continue
            ok = np.ones(len(notes), bool)
            for p in parse.primitives:
                ok &= hot[:, PRIMITIVES.index(p)]
            for c in parse.classes:
                has_all = hot[:, [PRIMITIVES.index(p) for p in CLASSES[c]]].all(axis=1)
                ok &= np.where(classes == "", has_all, classes == c)
            out[:, j] = ok
        return out

    @staticmethod
    def _multi_hot(notes: list[Annotation]) -> np.ndarray:
        hot = np.zeros((len(notes), len(PRIMITIVES)), np.float32)
        for i, note in enumerate(notes):
            hot[i, [PRIMITIVES.index(p) for p in note.primitives]] = 1.0
        return hot

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        notes = annotations(images)
        self.images_embedded += len(notes)
        return unit_rows(self._multi_hot(notes))

    def similarity(self, a: Sequence[Image.Image], b: Sequence[Image.Image]) -> np.ndarray:
        ha, hb = self._multi_hot(annotations(a)), self._multi_hot(annotations(b))
        self.images_embedded += len(ha) + len(hb)
        both = ha @ hb.T
        either = ha.sum(1)[:, None] + hb.sum(1)[None, :] - both
        return np.where(either > 0, both / np.maximum(either, 1.0), 1.0).astype(np.float32)


def describe(note: Annotation) -> str:
    """``"a sketch of a circle and spokes"`` (primitives in world order; ``"a sketch of scribbles"`` for none)."""
    nouns = [_NOUNS.get(p, f"a {p}") for p in PRIMITIVES if p in note.primitives]
    if not nouns:
        return "a sketch of scribbles"
    listed = nouns[0] if len(nouns) == 1 else ", ".join(nouns[:-1]) + " and " + nouns[-1]
    return f"a sketch of {listed}"


class OfflineCaptioner(Captioner):
    """Captions written from the annotations; nothing is cached (the annotations, not the pixels, decide)."""

    name = "offline"

    @property
    def identity(self) -> str:
        return f"offline(world={WORLD_HASH})"

    def _caption(self, images: list[Image.Image]) -> list[str | None]:
        return [describe(note) for note in annotations(images)]
