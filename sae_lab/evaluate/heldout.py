"""CoSy's held-out generator: images for a concept from a seed range and prompt template no explainer used.

Images are cached on disk per (generator, template, concept, seed) and shared by every method and latent that
asks for the concept; each concept's images go through classifier + SAE once, giving every latent's ``z_max``
(cached as well). Which templates and seeds the explainers used is read from what they recorded: each explanation
record's ``backends`` / ``detail`` (keys ``template`` / ``image_template`` / ``prompt_template``, ``seed`` /
``image_seed``, ``image_seeds`` as ``[start, stop)``) and a method folder's ``params.json`` / ``settings.json``
(LINE's ``line/params.json``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sae_lab.backends.image import ImageBackend, ImageCache, make_image_backend
from sae_lab.data.world import primitives_in_text
from sae_lab.evaluate.settings import HELDOUT_WORLD_SEED, SEED_SPACE
from sae_lab.run.files import RunFiles
from sae_lab.run.io import read_json
from sae_lab.run.records import ExplanationRecord

logger = logging.getLogger(__name__)

TEMPLATE_KEYS = ("template", "image_template", "prompt_template")
SEED_KEYS = ("image_seed", "seed")
RANGE_KEYS = ("image_seeds", "seed_range")


class HeldoutImageCache(ImageCache):
    """An :class:`ImageCache` whose image ``i`` of every concept is drawn with seed ``seed + i``: a plain range."""

    def image_seed(self, concept: str, index: int) -> int:
        return self.seed + index


@dataclass(frozen=True)
class UsedGeneration:
    """How one explainer drew images, as it recorded it."""

    source: str
    """Where it was read (``explanations/line.jsonl``, ``line/params.json``)."""
    template: str | None
    """Its prompt template."""
    seed: int | None
    """The run seed its per-image seeds were hashed from (:func:`~sae_lab.backends.image.image_seed`)."""
    seed_range: tuple[int, int] | None = None
    """An explicit ``[start, stop)`` of image seeds, when it drew from a plain range."""


def _generation(source: str, values: Mapping[str, Any]) -> UsedGeneration | None:
    template = next((values[k] for k in TEMPLATE_KEYS if isinstance(values.get(k), str)), None)
    seed = next((values[k] for k in SEED_KEYS if isinstance(values.get(k), int)), None)
    rng = next(
        (values[k] for k in RANGE_KEYS if isinstance(values.get(k), (list, tuple)) and len(values[k]) == 2), None
    )
    if template is None and rng is None:
        return None  # drew no images (LE, labels)
    return UsedGeneration(source, template, seed, (int(rng[0]), int(rng[1])) if rng else None)


def recorded_generation(files: RunFiles, explanations: Mapping[str, Mapping[int, ExplanationRecord]]
                        ) -> list[UsedGeneration]:  # fmt: skip
    """Every (template, seeds) an explainer recorded drawing images with, de-duplicated.

    A method whose records name an image backend but which recorded no template anywhere (records or folder)
    gets an entry with the template unknown and the shared hashed seeds assumed.
    """
    found: dict[UsedGeneration, None] = {}
    for method in sorted({*explanations, "line"}):
        records = explanations.get(method, {})
        source = f"explanations/{method}.jsonl"
        mine = [_generation(source, v) for r in records.values()
                for v in (r.backends, r.detail, r.detail.get("settings")) if isinstance(v, Mapping)]  # fmt: skip
        for name in ("params.json", "settings.json"):
            path = files.method_dir(method) / name
            values = read_json(path, default=None) if path.is_file() else None
            mine.append(_generation(f"{method}/{name}", values) if isinstance(values, dict) else None)
        mine = [u for u in mine if u is not None]
        if not any(u.template for u in mine) and any(r.backends.get("images") for r in records.values()):
            mine.append(UsedGeneration(source, None, None))  # it drew images but did not say how
        found.update(dict.fromkeys(mine))
    return list(found)


def check_heldout(template: str, seed_start: int, n_images: int, used: Sequence[UsedGeneration]) -> None:
    """Raises ValueError when the held-out template or seed range meets what an explainer used.

    Hashed seeds (:func:`~sae_lab.backends.image.image_seed`) lie in [0, 2^31): a range starting below
    that is refused whenever an explainer drew hashed seeds; explicit ranges must not overlap.
    """
    stop = seed_start + n_images
    for u in used:
        if u.template is None:
            logger.warning(
                "%s does not record its prompt template: cannot check that the held-out one differs", u.source
            )
        if u.template is not None and u.template.strip() == template.strip():
            raise ValueError(
                f"the held-out template {template!r} is the one {u.source} used: choose another (--template)"
            )
        if u.seed_range is not None and u.seed_range[0] < stop and seed_start < u.seed_range[1]:
            raise ValueError(
                f"the held-out seeds [{seed_start}, {stop}) overlap the seeds [{u.seed_range[0]}, {u.seed_range[1]}) "
                f"{u.source} drew images with: choose another --seed-start"
            )
        if u.seed_range is None and seed_start < SEED_SPACE:
            raise ValueError(
                f"{u.source} drew images with seeds hashed into [0, {SEED_SPACE}); the held-out range "
                f"[{seed_start}, {stop}) must start at or above {SEED_SPACE}"
            )


class HeldoutGenerator:
    """The held-out images of concepts and every latent's ``z_max`` on them, both cached.

    Args:
        spec: ``renderer``, ``diffusers:<id or path>`` or ``replicate:<model>``.
        template: prompt template with ``{concept}``.
        seed_start: image ``i`` of every concept is drawn with seed ``seed_start + i``.
        n_images: images per concept.
        root: cache folder (``images/`` and ``acts/`` go under it).
        image_size: the renderer's image size (the classifier's).
        backend: an image backend to use instead of building one from ``spec`` (tests).
    """

    def __init__(self, spec: str, template: str, seed_start: int, n_images: int, root: str | Path,
                 image_size: int = 64, backend: ImageBackend | None = None) -> None:  # fmt: skip
        self.spec, self.template, self.seed_start, self.n_images = spec.strip(), template, seed_start, n_images
        self.root, self.image_size = Path(root), image_size
        self.renderer = self.spec == "renderer"
        self._backend, self._cache = backend, None
        self.generated = 0
        """Images drawn (cache misses)."""
        self.concepts_cached = 0
        """Drawings whose activations came from the disk cache."""
        self.drawn: set[str] = set()
        """Drawings (see :meth:`drawing`) this object drew images of."""

    @property
    def backend(self) -> ImageBackend:
        if self._backend is None:  # a diffusion model loads only when an image is missing
            opts = {"image_size": self.image_size, "world_seed": HELDOUT_WORLD_SEED} if self.renderer else {}
            self._backend = make_image_backend(self.spec, **opts)
        return self._backend

    @property
    def cache(self) -> HeldoutImageCache:
        if self._cache is None:
            self._cache = HeldoutImageCache(self.root / "images", self.backend, self.template, self.seed_start)
        return self._cache

    def describe(self) -> dict[str, Any]:
        """The ``generator`` block of ``evaluation.json``."""
        out = {"spec": self.spec, "template": self.template, "seeds": [self.seed_start, self.seed_start + self.n_images],
               "n_images": self.n_images}  # fmt: skip
        if self.renderer:
            out["world_seed"] = HELDOUT_WORLD_SEED
            out["draws"] = "the primitives each concept names (concepts naming the same ones share images)"
        return out

    def drawing(self, concept: str) -> str | None:
        """What the generator is asked to draw for ``concept`` (None: nothing it can draw).

        The renderer draws only the primitives a text names (by name, synonym or class), so concepts naming the same
        primitives ("ring", "circle") are one drawing request and share images; other generators draw the text.
        """
        if not concept or not concept.strip():
            return None
        if self.renderer:
            return " and ".join(primitives_in_text(concept)) or None
        return concept.strip()

    def drawable(self, concept: str) -> bool:
        """The renderer draws only what names a primitive or class; other generators draw any text."""
        return self.drawing(concept) is not None

    def _acts_path(self, concept: str, sae_id: str) -> Path:
        blob = json.dumps([sae_id, self.describe(), self.image_size, concept])
        return self.root / "acts" / f"{hashlib.sha256(blob.encode()).hexdigest()[:24]}.npy"

    def activations(self, concepts: Sequence[str], scorer, sae_id: str, per_call: int = 8) -> dict[str, Tensor | None]:
        """``{concept: (n, M) z_max}`` of every latent on the concept's held-out images; None for a concept the
        generator cannot draw (or drew no image of).

        Args:
            scorer: a :class:`~sae_lab.explainers.line.scoring.LatentScorer` (images → every latent's ``z_max``).
            sae_id: the SAE's identity (part of the activation cache key).
            per_call: concepts per generator call and scoring pass (bounds memory).
        """
        drawings = {c: self.drawing(c) for c in dict.fromkeys(concepts)}
        acts: dict[str, Tensor | None] = {}
        need = []
        for drawing in dict.fromkeys(d for d in drawings.values() if d is not None):
            path = self._acts_path(drawing, sae_id)
            if path.is_file():
                acts[drawing] = torch.from_numpy(np.load(path, allow_pickle=False))
                self.concepts_cached += 1
            else:
                need.append(drawing)
        for start in range(0, len(need), per_call):
            chunk = need[start : start + per_call]
            self.drawn.update(c for c, _ in self.cache.missing(chunk, self.n_images))
            self.generated += self.cache.ensure(chunk, self.n_images)
            images = [self.cache.load(c, self.n_images) for c in chunk]
            z = scorer.z_max_images([im for ims in images for im in ims]).split([len(ims) for ims in images])
            for drawing, a in zip(chunk, z):
                acts[drawing] = a if len(a) else None
                if len(a) == self.n_images:  # a drawing with failed images is retried next time
                    path = self._acts_path(drawing, sae_id)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_name(f".{path.name}.tmp")
                    with open(tmp, "wb") as f:
                        np.save(f, a.numpy())
                    tmp.replace(path)
        return {c: None if d is None else acts.get(d) for c, d in drawings.items()}


__all__ = ["HeldoutGenerator", "HeldoutImageCache", "UsedGeneration", "check_heldout", "recorded_generation"]
