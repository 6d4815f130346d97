"""The sketch world: a procedural generator of hand-drawn-looking sketches with ground truth.

Twelve primitives (circle, square, …, spokes) are composed into classes; every sample carries
its class, a multi-hot of its primitives and one mask per primitive, so any latent of a model
trained on these images can be scored against every primitive at image and at token level.
Samples are deterministic per ``(seed, split, index)``, so any index can be drawn on its own.

The same renderer is the offline text-to-image backend: :func:`text_to_sketch` draws the
primitives (or the classes) a prompt names.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from sae_lab.data.strokes import Stroke, draw_strokes, hand_drawn, scribble, unit_shape

PRIMITIVES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "zigzag",
    "spiral",
    "wave",
    "dots",
    "hatching",
    "arc",
    "spokes",
)

# Class name -> primitives. Every class has >= 2 primitives, every primitive is in >= 2 classes,
# and no two classes share the same set (checked by `check_world_definition`). Three-primitive classes whose
# two-primitive subsets are classes too (wheel ⊃ sun, target; barn ⊃ house, crate, pyramid; river ⊃ storm, bridge)
# make those primitives decisive: telling barn from crate takes seeing the triangle, river from bridge the wave. Without
# such a pair a classifier may tell a class by what is missing (a field is hatching without a square or triangle) and
# never learn the primitive itself.
CLASSES: dict[str, tuple[str, ...]] = {
    "sun": ("circle", "spokes"),
    "house": ("square", "triangle"),
    "target": ("circle", "cross"),
    "window": ("square", "cross"),
    "mountain": ("triangle", "zigzag"),
    "snail": ("spiral", "arc"),
    "ocean": ("wave", "dots"),
    "night sky": ("star", "dots"),
    "field": ("hatching", "wave"),
    "crate": ("square", "hatching"),
    "storm": ("zigzag", "wave"),
    "badge": ("star", "circle"),
    "pyramid": ("triangle", "hatching"),
    "galaxy": ("spiral", "star"),
    "firework": ("spokes", "dots", "star"),
    "bridge": ("arc", "zigzag"),
    "wheel": ("circle", "spokes", "cross"),
    "rainbow": ("arc", "spiral", "dots"),
    "barn": ("square", "triangle", "hatching"),
    "river": ("arc", "zigzag", "wave"),
}

# Words a prompt may use for each primitive (text-to-sketch and the offline proposer use them).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "circles", "ring", "rings", "round", "loop", "oval"),
    "square": ("square", "squares", "box", "boxes", "rectangle", "quadrilateral"),
    "triangle": ("triangle", "triangles", "triangular", "wedge"),
    "star": ("star", "stars", "pentagram", "starburst shape"),
    "cross": ("cross", "crosses", "plus", "plus sign", "crosshair"),
    "zigzag": ("zigzag", "zig-zag", "zigzags", "jagged line", "sawtooth"),
    "spiral": ("spiral", "spirals", "swirl", "coil", "whorl"),
    "wave": ("wave", "waves", "wavy", "wavy line", "sine", "ripple"),
    "dots": ("dots", "dot", "dotted", "points", "specks", "spots"),
    "hatching": ("hatching", "hatched", "stripes", "parallel lines", "diagonal lines", "shading"),
    "arc": ("arc", "arcs", "arch", "curve", "semicircle", "bow"),
    "spokes": ("spokes", "rays", "radial lines", "radiating lines", "sunburst"),
}


def check_world_definition(classes: dict[str, tuple[str, ...]] = CLASSES) -> None:
    """Raises ValueError when the class table breaks the world's constraints."""
    if len(PRIMITIVES) < 12 or len(classes) < 16:
        raise ValueError("the sketch world needs >= 12 primitives and >= 16 classes")
    seen: set[frozenset[str]] = set()
    for name, prims in classes.items():
        if len(prims) < 2:
            raise ValueError(f"class {name!r} has fewer than 2 primitives")
        unknown = set(prims) - set(PRIMITIVES)
        if unknown:
            raise ValueError(f"class {name!r} uses unknown primitives {sorted(unknown)}")
        key = frozenset(prims)
        if key in seen:
            raise ValueError(f"class {name!r} repeats another class's primitive set")
        seen.add(key)
    for p in PRIMITIVES:
        n = sum(p in prims for prims in classes.values())
        if n < 2:
            raise ValueError(f"primitive {p!r} appears in {n} classes (needs >= 2)")


# --------------------------------------------------------------------------- samples


@dataclass
class WorldSample:
    """One sketch with its ground truth."""

    image: np.ndarray
    """(S, S) uint8, white background (255) and dark strokes, like TU-Berlin."""
    label: int
    """Class index into ``SketchWorld.classes``."""
    primitives: np.ndarray
    """(P,) uint8 multi-hot of the primitives drawn."""
    masks: np.ndarray
    """(P, S, S) bool, the pixels of each primitive's strokes (all False for absent ones)."""


class SketchWorld:
    """Deterministic generator of sketch-world samples.

    Args:
        image_size: side S of the square output images in pixels.
        seed: world seed; the same seed, split and index always give the same sample.
        distractors: inclusive (min, max) number of distractor scribbles per image.
        supersample: render at ``supersample * S`` and downsample, for anti-aliased strokes.
    """

    def __init__(
        self, image_size: int = 64, seed: int = 0, distractors: tuple[int, int] = (0, 2), supersample: int = 3
    ):
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16 pixels, got {image_size}")
        check_world_definition()
        self.image_size = image_size
        self.seed = seed
        self.distractors = distractors
        self.supersample = supersample
        self.primitives = PRIMITIVES
        self.classes = tuple(CLASSES)
        self.class_primitives = [tuple(PRIMITIVES.index(p) for p in CLASSES[c]) for c in self.classes]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_primitives(self) -> int:
        return len(self.primitives)

    def rng(self, index: int, split: str = "train") -> np.random.Generator:
        split_id = {"train": 0, "test": 1, "control": 2}.get(split)
        if split_id is None:
            split_id = 3 + sum(split.encode())  # any other named stream (e.g. a generator seed)
        return np.random.default_rng([self.seed, split_id, index])

    def sample(self, index: int, split: str = "train") -> WorldSample:
        """The sample at `index` of `split` ("train" | "test" | any other stream name)."""
        rng = self.rng(index, split)
        label = index % self.num_classes
        image, masks = self.render(self.class_primitives[label], rng)
        multi_hot = np.zeros(self.num_primitives, np.uint8)
        multi_hot[list(self.class_primitives[label])] = 1
        return WorldSample(image, label, multi_hot, masks)

    # ------------------------------------------------------------------ rendering
    def _place(self, n: int, rng: np.random.Generator) -> list[tuple[float, float, float]]:
        """Centres and radii (in unit image coordinates) for n primitives with limited overlap."""
        lo, hi = (0.17, 0.27) if n <= 2 else (0.14, 0.21)
        for _ in range(200):
            out: list[tuple[float, float, float]] = []
            for _ in range(n):
                r = rng.uniform(lo, hi)
                cx, cy = rng.uniform(r + 0.02, 1 - r - 0.02, size=2)
                out.append((cx, cy, r))
            if all(math.dist(a[:2], b[:2]) > 0.85 * (a[2] + b[2]) for i, a in enumerate(out) for b in out[i + 1 :]):
                return out
        return out  # crowded but valid: masks still say which stroke is which

    def _strokes(self, prim_ids, rng: np.random.Generator) -> list[Stroke]:
        big = self.image_size * self.supersample
        strokes: list[Stroke] = []
        for pid, (cx, cy, r) in zip(prim_ids, self._place(len(prim_ids), rng)):
            theta = rng.uniform(0, 2 * math.pi)
            rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
            aspect = np.array([rng.uniform(0.85, 1.15), 1.0])
            width = max(1, round(rng.uniform(1.3, 2.2) * self.supersample * self.image_size / 64))
            for line in unit_shape(PRIMITIVES[pid], rng):
                pts = hand_drawn(line * aspect, rng, 0.035) @ rot.T
                strokes.append(Stroke((pts * r + np.array([cx, cy])) * big, width, pid))
        lo, hi = self.distractors
        for _ in range(int(rng.integers(lo, hi + 1))):
            start = rng.uniform(0.1, 0.9, size=2)
            pts = (scribble(rng) * rng.uniform(0.6, 1.2) + start) * big
            strokes.append(Stroke(pts, max(1, round(self.supersample * self.image_size / 64)), -1))
        return strokes

    def _draw(self, strokes: list[Stroke]) -> tuple[np.ndarray, np.ndarray]:
        return draw_strokes(strokes, self.image_size, self.supersample, self.num_primitives)

    def render(self, prim_ids, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draws the given primitives (indices) at random places; returns (image, masks)."""
        return self._draw(self._strokes(list(prim_ids), rng))

    def render_prompt(self, prompt: str, seed: int = 0) -> tuple[np.ndarray, list[str]]:
        """Text-to-sketch: draws what `prompt` names. See :func:`text_to_sketch`."""
        names = primitives_in_text(prompt)
        rng = np.random.default_rng([self.seed, 7919, seed, *prompt.encode()[:64]])
        if not names:
            # Nothing the world can draw: only scribbles, so the image shows no primitive.
            strokes = []
            for _ in range(int(rng.integers(2, 5))):
                pts = (scribble(rng) * rng.uniform(0.8, 1.6) + rng.uniform(0.15, 0.85, size=2)) * (
                    self.image_size * self.supersample
                )
                strokes.append(Stroke(pts, max(1, round(1.6 * self.supersample * self.image_size / 64)), -1))
            return self._draw(strokes)[0], []
        image, _ = self.render([PRIMITIVES.index(n) for n in names], rng)
        return image, names


_WORD_RE = {
    p: re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(ws, key=len, reverse=True)) + r")\b", re.I)
    for p, ws in SYNONYMS.items()
}


def primitives_in_text(text: str) -> list[str]:
    """Primitive names a text mentions, by name, synonym or class name, in world order (at most 3)."""
    found = {p for p, pattern in _WORD_RE.items() if pattern.search(text)}
    lowered = text.lower()
    for cls, prims in CLASSES.items():
        if re.search(r"\b" + re.escape(cls) + r"\b", lowered):
            found.update(prims)
    return [p for p in PRIMITIVES if p in found][:3]


def text_to_sketch(prompt: str, seed: int = 0, image_size: int = 64, world_seed: int = 0) -> np.ndarray:
    """Renders a prompt such as "a simple line drawing of a spiral" as a sketch-world image.

    Primitives are found by name or synonym ("swirl" → spiral) and class names draw their class's
    primitives; a prompt naming nothing drawable gives an image of distractor scribbles only.

    Returns:
        (S, S) uint8 image, white background.
    """
    return SketchWorld(image_size=image_size, seed=world_seed).render_prompt(prompt, seed)[0]
