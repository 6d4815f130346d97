"""A small planted case: a probe set of sketch-world annotations whose latents are each one primitive plus noise,
and the report records that go with it (no models)."""

from __future__ import annotations

import torch

from sae_lab.data.world import CLASSES, PRIMITIVES
from sae_lab.explainers.probe import ProbeSet
from sae_lab.run import NeuronRecord

N_IMAGES = 400
NUM_LATENTS = 24
SIZE = 8
CLASS_NAMES = list(CLASSES)


def planted_probe(seed: int = 0, noise: float = 0.3) -> ProbeSet:
    """Latent j fires on images containing primitive ``PRIMITIVES[j % 12]`` (multiplicative noise, a little
    background); ``z_max`` = ``z_avg`` scaled."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(len(CLASS_NAMES), (N_IMAGES,), generator=g)
    prims = torch.zeros(N_IMAGES, len(PRIMITIVES))
    for i, label in enumerate(labels.tolist()):
        prims[i, [PRIMITIVES.index(p) for p in CLASSES[CLASS_NAMES[label]]]] = 1.0
    which = torch.arange(NUM_LATENTS) % len(PRIMITIVES)
    z_avg = prims[:, which] * (1 + noise * torch.randn(N_IMAGES, NUM_LATENTS, generator=g)).clamp_min(0.1)
    z_avg += 0.05 * torch.rand(N_IMAGES, NUM_LATENTS, generator=g)
    images = torch.zeros(N_IMAGES, SIZE, SIZE, dtype=torch.uint8)
    return ProbeSet(torch.arange(N_IMAGES), images, labels, prims, 3 * z_avg, z_avg, CLASS_NAMES, list(PRIMITIVES),
                    "test")  # fmt: skip


def planted_neurons(auc: float = 0.97) -> list[NeuronRecord]:
    """Report records: latent j's ground truth is its primitive; its top class is the first class drawing it."""
    out = []
    for j in range(NUM_LATENTS):
        p = PRIMITIVES[j % len(PRIMITIVES)]
        top = next(c for c, ps in CLASSES.items() if p in ps)
        out.append(NeuronRecord(j, top_classes=[{"class": top, "S": 1.0}],
                                ground_truth={"primitive": p, "image_auc": auc, "token_auc": auc}))  # fmt: skip
    return out
