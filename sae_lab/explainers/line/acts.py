"""Every latent's activations on a concept's generated images, computed once per concept and kept on disk."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from sae_lab.backends.image import ImageCache
from sae_lab.explainers.line.scoring import LatentScorer


class ConceptActivations:
    """``(n, M)`` ``z_max`` of every latent on each concept's ``n`` images: drawn once (the image cache), scored
    once through classifier + SAE, and saved beside the images (``acts-<key>.npy``).

    A concept some of whose images failed is scored on those that came back and is not saved, so a later session
    tries the missing ones again.

    Args:
        cache: The image cache (backend, template and seed).
        scorer: Classifier + SAE.
        sae_id: The SAE's identity (part of the file key: another SAE never reads these).
        n_images: Images per concept.
    """

    def __init__(self, cache: ImageCache, scorer: LatentScorer, sae_id: str, n_images: int) -> None:
        self.cache, self.scorer, self.sae_id, self.n = cache, scorer, sae_id, n_images
        self._memo: dict[str, torch.Tensor] = {}

    def path(self, concept: str) -> Path:
        blob = json.dumps([self.sae_id, self.cache.backend.identity, self.cache.template, concept, self.cache.seed,
                           self.n])  # fmt: skip
        return self.cache.root / f"acts-{hashlib.sha256(blob.encode()).hexdigest()[:24]}.npy"

    def __call__(self, concepts: Sequence[str]) -> dict[str, torch.Tensor]:
        need = []
        for concept in dict.fromkeys(concepts):
            if concept in self._memo:
                continue
            path = self.path(concept)
            if path.is_file():
                self._memo[concept] = torch.from_numpy(np.load(path, allow_pickle=False))
            else:
                need.append(concept)
        per_call = max(1, 64 // self.n)  # concepts per backend call and per scoring chunk (bounded memory)
        for start in range(0, len(need), per_call):
            chunk = need[start : start + per_call]
            self.cache.ensure(chunk, self.n)
            images = [self.cache.load(c, self.n) for c in chunk]
            z = self.scorer.z_max_images([im for ims in images for im in ims]).split([len(ims) for ims in images])
            for concept, acts in zip(chunk, z):
                self._memo[concept] = acts
                if len(acts) == self.n:  # a concept with failed images is retried next time
                    path = self.path(concept)
                    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # a killed write: removed next session
                    with open(tmp, "wb") as f:
                        np.save(f, acts.numpy())
                    tmp.replace(path)
        return {c: self._memo[c] for c in concepts}
