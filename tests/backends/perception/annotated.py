"""Annotated sketch-world images as the explainers see them: ``ProbeSet.pil`` over real world samples."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from sae_lab.data.world import PRIMITIVES, SketchWorld
from sae_lab.explainers.probe import ProbeSet

SIZE = 32


def probe_set(n: int = 20, size: int = SIZE) -> ProbeSet:
    """A probe set of the first ``n`` training samples of a world (activations are zeros: unused here)."""
    world = SketchWorld(image_size=size, seed=0)
    samples = [world.sample(i) for i in range(n)]
    return ProbeSet(
        rows=torch.arange(n),
        images=torch.from_numpy(np.stack([255 - s.image for s in samples])),  # ProbeSet keeps ink
        labels=torch.tensor([s.label for s in samples]),
        primitives=torch.from_numpy(np.stack([s.primitives for s in samples])).float(),
        z_max=torch.zeros(n, 4),
        z_avg=torch.zeros(n, 4),
        class_names=list(world.classes),
        primitive_names=list(PRIMITIVES),
        split="train",
    )


def probe_images(n: int = 20) -> list[Image.Image]:
    probe = probe_set(n)
    return [probe.pil(i) for i in range(n)]
