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
from PIL import Image, ImageDraw

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


# --------------------------------------------------------------------------- shapes
# Each shape returns polylines in unit coordinates (centred at 0, radius <= 1).


def _ring(r: float, a0: float, sweep: float, n: int = 48) -> np.ndarray:
    t = a0 + np.linspace(0.0, sweep, n)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _shape(name: str, rng: np.random.Generator) -> list[np.ndarray]:
    if name == "circle":
        return [_ring(0.9, rng.uniform(0, 2 * math.pi), 2 * math.pi + rng.uniform(0.05, 0.35))]
    if name == "square":
        c = np.array([[-0.75, -0.75], [0.75, -0.75], [0.75, 0.75], [-0.75, 0.75], [-0.75, -0.72]])
        return [c]
    if name == "triangle":
        a = math.pi / 2 + np.array([0, 2, 4, 6]) * math.pi / 3
        return [np.stack([0.95 * np.cos(a), 0.95 * np.sin(a) - 0.1], 1)]
    if name == "star":
        a = math.pi / 2 + np.arange(11) * math.pi / 5
        r = np.where(np.arange(11) % 2 == 0, 0.95, 0.4)
        return [np.stack([r * np.cos(a), r * np.sin(a)], 1)]
    if name == "cross":
        return [np.array([[-0.9, 0.0], [0.9, 0.0]]), np.array([[0.0, -0.9], [0.0, 0.9]])]
    if name == "zigzag":
        n = int(rng.integers(4, 7))
        x = np.linspace(-0.9, 0.9, n + 1)
        y = np.where(np.arange(n + 1) % 2 == 0, -0.4, 0.4)
        return [np.stack([x, y], 1)]
    if name == "spiral":
        t = np.linspace(0.0, 1.0, 80)
        turns = rng.uniform(2.2, 3.0)
        a = 2 * math.pi * turns * t
        r = 0.1 + 0.8 * t
        return [np.stack([r * np.cos(a), r * np.sin(a)], 1)]
    if name == "wave":
        x = np.linspace(-0.95, 0.95, 60)
        cycles = rng.uniform(1.5, 2.2)
        return [np.stack([x, 0.32 * np.sin(2 * math.pi * cycles * (x + 1) / 2)], 1)]
    if name == "dots":
        n = int(rng.integers(5, 9))
        out = []
        for _ in range(n):
            r, a = 0.8 * math.sqrt(rng.uniform(0.05, 1.0)), rng.uniform(0, 2 * math.pi)
            cx, cy = r * math.cos(a), r * math.sin(a)
            out.append(_ring(0.05, 0.0, 2 * math.pi, 8) + np.array([cx, cy]))
        return out
    if name == "hatching":
        n = int(rng.integers(5, 7))
        offs = np.linspace(-0.7, 0.7, n)
        return [np.array([[o - 0.45, -0.75], [o + 0.45, 0.75]]) for o in offs]
    if name == "arc":
        return [_ring(0.9, 0.0, math.pi, 40) + np.array([0.0, -0.35])]
    if name == "spokes":
        n = int(rng.integers(6, 9))
        a0 = rng.uniform(0, 2 * math.pi)
        return [
            np.array([[0.15 * math.cos(a), 0.15 * math.sin(a)], [0.92 * math.cos(a), 0.92 * math.sin(a)]])
            for a in a0 + np.arange(n) * 2 * math.pi / n
        ]
    raise ValueError(f"unknown primitive {name!r}; known: {', '.join(PRIMITIVES)}")


def _resample(line: np.ndarray, step: float) -> np.ndarray:
    """Resamples a polyline to points about `step` apart (so jitter bends straight segments)."""
    seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 0:
        return line
    n = max(2, int(math.ceil(s[-1] / step)) + 1)
    q = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(q, s, line[:, 0]), np.interp(q, s, line[:, 1])], 1)


def _hand_drawn(line: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Adds a smooth low-frequency wobble plus a little per-point noise, like a hand-drawn stroke."""
    line = _resample(line, 0.08)
    t = np.linspace(0.0, 1.0, len(line))[:, None]
    wobble = np.zeros_like(line)
    for freq in (1.0, 2.0, 3.5):
        phase = rng.uniform(0, 2 * math.pi, size=2)
        wobble += rng.normal(0, amount / freq, size=2) * np.sin(2 * math.pi * freq * t + phase)
    return line + wobble + rng.normal(0, amount * 0.15, size=line.shape)


def _scribble(rng: np.random.Generator) -> np.ndarray:
    """A short random smooth curve, the world's distractor."""
    n = 12
    heading = rng.uniform(0, 2 * math.pi)
    turn = rng.normal(0, 0.5, size=n).cumsum()
    steps = 0.06 * np.stack([np.cos(heading + turn), np.sin(heading + turn)], 1)
    return np.concatenate([[[0.0, 0.0]], steps.cumsum(0)])


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


@dataclass
class _Stroke:
    points: np.ndarray  # (n, 2) pixel coordinates on the supersampled canvas
    width: int
    owner: int  # primitive index, or -1 for a distractor


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

    def _strokes(self, prim_ids, rng: np.random.Generator) -> list[_Stroke]:
        big = self.image_size * self.supersample
        strokes: list[_Stroke] = []
        for pid, (cx, cy, r) in zip(prim_ids, self._place(len(prim_ids), rng)):
            theta = rng.uniform(0, 2 * math.pi)
            rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
            aspect = np.array([rng.uniform(0.85, 1.15), 1.0])
            width = max(1, round(rng.uniform(1.3, 2.2) * self.supersample * self.image_size / 64))
            for line in _shape(PRIMITIVES[pid], rng):
                pts = _hand_drawn(line * aspect, rng, 0.035) @ rot.T
                strokes.append(_Stroke((pts * r + np.array([cx, cy])) * big, width, pid))
        lo, hi = self.distractors
        for _ in range(int(rng.integers(lo, hi + 1))):
            start = rng.uniform(0.1, 0.9, size=2)
            pts = (_scribble(rng) * rng.uniform(0.6, 1.2) + start) * big
            strokes.append(_Stroke(pts, max(1, round(self.supersample * self.image_size / 64)), -1))
        return strokes

    def _draw(self, strokes: list[_Stroke]) -> tuple[np.ndarray, np.ndarray]:
        big = self.image_size * self.supersample
        ink = Image.new("L", (big, big), 0)
        per_prim = {s.owner: Image.new("L", (big, big), 0) for s in strokes if s.owner >= 0}
        draw = ImageDraw.Draw(ink)
        prim_draws = {k: ImageDraw.Draw(v) for k, v in per_prim.items()}
        for s in strokes:
            xy = [tuple(p) for p in s.points.tolist()]
            draw.line(xy, fill=255, width=s.width, joint="curve")
            if s.owner >= 0:
                prim_draws[s.owner].line(xy, fill=255, width=s.width, joint="curve")
        size = (self.image_size, self.image_size)
        image = 255 - np.asarray(ink.resize(size, Image.BOX), dtype=np.uint8)
        masks = np.zeros((self.num_primitives, *size[::-1]), bool)
        for pid, canvas in per_prim.items():
            masks[pid] = np.asarray(canvas.resize(size, Image.BOX)) >= 64
        return image, masks

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
                pts = (_scribble(rng) * rng.uniform(0.8, 1.6) + rng.uniform(0.15, 0.85, size=2)) * (
                    self.image_size * self.supersample
                )
                strokes.append(_Stroke(pts, max(1, round(1.6 * self.supersample * self.image_size / 64)), -1))
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
