"""Simulation correlation (LE's protocol, Oikarinen & Weng 2024, ``simulate_correlation.py``).

An explanation predicts a latent's activation on an image: Σ wᵢ·P(cᵢ | x) + b for a linear explanation, P(c | x)
for a single concept, with P from a perception backend (the *simulator*) other than the explainers'. The score is
Pearson r between the prediction and the latent's real pooled activation (``z_avg``) over the probe set's held-out
images. Presences are computed once per (image, concept) and shared by every latent and every method.

Conventions: a prediction that does not vary over the images (its concepts present nowhere or everywhere) has
r = 0 (it predicts nothing); a latent that does not vary there gets None (it cannot be scored by any method).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from sae_lab.data.world import CLASSES, primitives_in_text
from sae_lab.explainers.probe import ProbeSet
from sae_lab.run.records import ExplanationRecord, Term

PresenceFn = Callable[[Sequence[Image.Image], Sequence[str]], Any]
"""``(images, concepts) -> (N, C)`` presence in [0, 1] (numpy array or tensor)."""


def offline_presence(images: Sequence[Image.Image], concepts: Sequence[str]) -> np.ndarray:
    """The sketch world's annotations as a simulator: a class name is present iff the image is of that class; any
    other concept iff every primitive it names (by name or synonym) is in the image (nothing named: absent).

    Reads ``image.info["class"]`` and ``image.info["primitives"]`` (set by :meth:`ProbeSet.pil`).
    """
    out = np.zeros((len(images), len(concepts)), np.float32)
    wanted = []
    for concept in concepts:
        key = concept.strip().lower()
        wanted.append(("class", key) if key in CLASSES else ("prims", set(primitives_in_text(concept))))
    for i, image in enumerate(images):
        if "class" not in image.info and "primitives" not in image.info:
            raise ValueError("the offline simulator needs annotated images (image.info 'class' / 'primitives')")
        cls, prims = str(image.info.get("class", "")).lower(), set(image.info.get("primitives") or ())
        for j, (kind, want) in enumerate(wanted):
            out[i, j] = float(cls == want) if kind == "class" else float(bool(want) and want <= prims)
    return out


def make_simulator(spec: str) -> PresenceFn:
    """The presence function of a perception backend spec (``offline``, ``hf:<id or path>``, …).

    Uses :func:`sae_lab.backends.perception.make_perception` where that package provides it; ``offline`` falls back
    to :func:`offline_presence` without it.
    """
    try:
        from sae_lab.backends.perception import make_perception  # type: ignore[attr-defined]
    except ImportError:
        if spec.strip() == "offline":
            return offline_presence
        raise ValueError(f"simulator {spec!r} needs the perception backends (sae_lab.backends.perception)") from None
    return make_perception(spec).presence


class PresenceTable:
    """Presences of a fixed list of images, computed once per concept (so each image × concept is asked once).

    Args:
        presence: a presence function or a backend with ``.presence(images, concepts)``.
        images: the images (the probe set's held-out part).
    """

    def __init__(self, presence: PresenceFn | Any, images: Sequence[Image.Image]) -> None:
        self.presence = presence.presence if hasattr(presence, "presence") else presence
        self.images = list(images)
        self.columns: dict[str, Tensor] = {}
        self.asked = 0
        """Concepts sent to the presence function."""

    def __call__(self, concepts: Sequence[str]) -> Tensor:
        """(N, C) float64 presences of ``concepts``."""
        todo = [c for c in dict.fromkeys(concepts) if c not in self.columns]
        if todo:
            p = torch.as_tensor(np.asarray(self.presence(self.images, todo), dtype=np.float64))
            if p.shape != (len(self.images), len(todo)):
                raise ValueError(f"presence returned shape {tuple(p.shape)}, expected {(len(self.images), len(todo))}")
            self.asked += len(todo)
            for j, concept in enumerate(todo):
                self.columns[concept] = p[:, j]
        if not concepts:
            return torch.zeros(len(self.images), 0, dtype=torch.float64)
        return torch.stack([self.columns[c] for c in concepts], 1)


def predict(record: ExplanationRecord, table: PresenceTable) -> Tensor:
    """(N,) float64 predicted activation: Σ wᵢ·P(cᵢ | x) + b (a single concept: P(c | x))."""
    terms = record.terms or ([Term(record.text, 1.0)] if record.text else [])
    p = table([t.concept for t in terms])
    weights = torch.tensor([float(t.weight) for t in terms], dtype=torch.float64)
    return p @ weights + float(record.bias or 0.0)


def pearson_r(pred: Tensor, target: Tensor) -> float | None:
    """Pearson r; 0 for a constant prediction, None for a constant target (see the module docstring)."""
    pred, target = pred.double() - pred.double().mean(), target.double() - target.double().mean()
    if len(target) < 2 or float(target.norm()) == 0.0:
        return None
    if float(pred.norm()) == 0.0:
        return 0.0
    r = float((pred * target).sum() / (pred.norm() * target.norm()))
    return r if math.isfinite(r) else None


def simulate(
    records: Mapping[int, ExplanationRecord] | Iterable[ExplanationRecord],
    presence: PresenceFn | PresenceTable | Any,
    probe: ProbeSet,
    idx: Tensor | Sequence[int],
    pooling: str = "avg",
) -> dict[int, float | None]:
    """Simulation correlation of every explained latent.

    Args:
        records: explanations (one per latent), as ``{latent: record}`` or a list; unexplained ones are skipped.
        presence: a presence function, a perception backend, or a :class:`PresenceTable` of ``idx``'s images
            (pass one table to several calls to share presences across methods).
        probe: the probe set (real images and every latent's activation).
        idx: indices of the images to score on (``probe.partition(seed)["heldout"]``).
        pooling: the latent's pooled activation: ``avg`` (``z_avg``, LE) or ``max``.

    Returns:
        ``{latent: r}`` (None where the latent is constant on the images).
    """
    idx = torch.as_tensor(idx, dtype=torch.long)
    table = (
        presence if isinstance(presence, PresenceTable) else PresenceTable(presence, [probe.pil(int(i)) for i in idx])
    )
    if len(table.images) != len(idx):
        raise ValueError(f"the presence table holds {len(table.images)} images, idx {len(idx)}")
    acts = probe.activations(pooling)[idx]
    recs = records.values() if isinstance(records, Mapping) else records
    return {r.latent: pearson_r(predict(r, table), acts[:, r.latent]) for r in recs if r.ok}


__all__ = ["PresenceFn", "PresenceTable", "make_simulator", "offline_presence", "pearson_r", "predict", "simulate"]
