"""Hand-drawn strokes: each primitive's shape as unit polylines, the wobble that makes a line look hand-drawn,
distractor scribbles, and the rasteriser that draws strokes into an image and one mask per primitive."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# Each shape returns polylines in unit coordinates (centred at 0, radius <= 1).


def ring(r: float, a0: float, sweep: float, n: int = 48) -> np.ndarray:
    """(n, 2) points of an arc of radius ``r`` from angle ``a0`` over ``sweep`` radians."""
    t = a0 + np.linspace(0.0, sweep, n)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def unit_shape(name: str, rng: np.random.Generator) -> list[np.ndarray]:
    """The polylines of primitive ``name``, each (n, 2) in unit coordinates; ``rng`` varies counts and angles."""
    if name == "circle":
        return [ring(0.9, rng.uniform(0, 2 * math.pi), 2 * math.pi + rng.uniform(0.05, 0.35))]
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
            out.append(ring(0.05, 0.0, 2 * math.pi, 8) + np.array([cx, cy]))
        return out
    if name == "hatching":
        n = int(rng.integers(5, 7))
        offs = np.linspace(-0.7, 0.7, n)
        return [np.array([[o - 0.45, -0.75], [o + 0.45, 0.75]]) for o in offs]
    if name == "arc":
        return [ring(0.9, 0.0, math.pi, 40) + np.array([0.0, -0.35])]
    if name == "spokes":
        n = int(rng.integers(6, 9))
        a0 = rng.uniform(0, 2 * math.pi)
        return [
            np.array([[0.15 * math.cos(a), 0.15 * math.sin(a)], [0.92 * math.cos(a), 0.92 * math.sin(a)]])
            for a in a0 + np.arange(n) * 2 * math.pi / n
        ]
    raise ValueError(f"unknown primitive {name!r}")


def resample(line: np.ndarray, step: float) -> np.ndarray:
    """Resamples a polyline to points about `step` apart (so jitter bends straight segments)."""
    seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 0:
        return line
    n = max(2, int(math.ceil(s[-1] / step)) + 1)
    q = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(q, s, line[:, 0]), np.interp(q, s, line[:, 1])], 1)


def hand_drawn(line: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Adds a smooth low-frequency wobble plus a little per-point noise, like a hand-drawn stroke."""
    line = resample(line, 0.08)
    t = np.linspace(0.0, 1.0, len(line))[:, None]
    wobble = np.zeros_like(line)
    for freq in (1.0, 2.0, 3.5):
        phase = rng.uniform(0, 2 * math.pi, size=2)
        wobble += rng.normal(0, amount / freq, size=2) * np.sin(2 * math.pi * freq * t + phase)
    return line + wobble + rng.normal(0, amount * 0.15, size=line.shape)


def scribble(rng: np.random.Generator) -> np.ndarray:
    """A short random smooth curve, the world's distractor."""
    n = 12
    heading = rng.uniform(0, 2 * math.pi)
    turn = rng.normal(0, 0.5, size=n).cumsum()
    steps = 0.06 * np.stack([np.cos(heading + turn), np.sin(heading + turn)], 1)
    return np.concatenate([[[0.0, 0.0]], steps.cumsum(0)])


@dataclass
class Stroke:
    """One polyline to draw, and which primitive it belongs to."""

    points: np.ndarray
    """(n, 2) pixel coordinates on the supersampled canvas."""
    width: int
    """Line width in supersampled pixels."""
    owner: int
    """Primitive index, or -1 for a distractor."""


def draw_strokes(
    strokes: list[Stroke], image_size: int, supersample: int, num_primitives: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draws strokes on a ``supersample``-times larger canvas and box-downsamples (anti-aliased strokes).

    Returns:
        (S, S) uint8 image (white background, dark strokes) and (P, S, S) bool masks, one per primitive.
    """
    big = image_size * supersample
    ink = Image.new("L", (big, big), 0)
    per_prim = {s.owner: Image.new("L", (big, big), 0) for s in strokes if s.owner >= 0}
    draw = ImageDraw.Draw(ink)
    prim_draws = {k: ImageDraw.Draw(v) for k, v in per_prim.items()}
    for s in strokes:
        xy = [tuple(p) for p in s.points.tolist()]
        draw.line(xy, fill=255, width=s.width, joint="curve")
        if s.owner >= 0:
            prim_draws[s.owner].line(xy, fill=255, width=s.width, joint="curve")
    size = (image_size, image_size)
    image = 255 - np.asarray(ink.resize(size, Image.BOX), dtype=np.uint8)
    masks = np.zeros((num_primitives, *size[::-1]), bool)
    for pid, canvas in per_prim.items():
        masks[pid] = np.asarray(canvas.resize(size, Image.BOX)) >= 64
    return image, masks
