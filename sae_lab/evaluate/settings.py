"""The settings of ``evaluate``: one dataclass, a docstring per field (it becomes ``--help``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from sae_lab.explainers.base import parse_latents

HELDOUT_TEMPLATE = "a quick pencil sketch of {concept}"
"""The held-out prompt template: no explainer's (LINE and DnD draw "a simple black-and-white line drawing of …")."""

SEED_SPACE = 2**31
"""Explainers draw image seeds from [0, 2^31) (:func:`~sae_lab.backends.image.image_seed`); the held-out
range starts here by default, so it cannot meet any of them."""

HELDOUT_WORLD_SEED = 1
"""The renderer's world seed for held-out images (explainers render with 0): other placement and jitter."""


@dataclass
class EvaluateSettings:
    """Options of ``evaluate``: every explanation of the run scored on the same latents with held-out evidence."""

    run: str = "reports/quickstart"
    """The report folder (``reports/<name>``) or a run name."""
    n_latents: int = 64
    """Size of the random sample of live latents that every method is scored on."""
    latents: str | None = None
    """Override the sample: ``all`` (every live latent) or ids such as ``0-63,70``."""
    latents_seed: int = 0
    """Seed of the latent sample (and of the ``random`` baseline's concepts)."""
    generator: str = "renderer"
    """Held-out text-to-image generator: ``renderer`` (sketch world), ``diffusers:<hub id or path>``,
    ``replicate:<owner/model>``."""
    template: str = HELDOUT_TEMPLATE
    """Held-out prompt template with ``{concept}``; must differ from every template an explainer used."""
    seed_start: int = SEED_SPACE
    """First image seed of the held-out range ``[seed_start, seed_start + n_images)``; must not meet any seed an
    explainer drew images with."""
    n_images: int = 50
    """Generated images per concept for CoSy (CoSy: 50)."""
    simulator: str = "offline"
    """Perception backend that predicts activations for simulation: ``offline`` (sketch-world annotations) or
    ``hf:<id or path>``; must not be a backend an explainer used (the annotations excepted)."""
    probe_images: int = 2000
    """Real images in the probe set (CoSy's controls; simulation uses its held-out part)."""
    probe_seed: int = 0
    """Seed of the probe set and of its fit/select/held-out split: the explainers' (LE's) seed, so that simulation
    runs on images LE did not fit on."""
    sae: str | None = None
    """SAE export folder (default: the one the report was written from)."""
    classifier: str | None = None
    """Classifier checkpoint (default: the one recorded by the SAE)."""
    out: str | None = None
    """Write the evaluation JSON here instead of ``reports/<run>/evaluation.json`` (the report and summary.json
    are left untouched)."""
    cache_dir: str | None = None
    """Folder of generated images, activations and scored rows (default: ``reports/<run>/evaluate``)."""
    device: str | None = None
    """``cpu``, ``cuda``, … (default: CUDA when available)."""
    batch_size: int = 64
    """Images per classifier forward pass."""
    overwrite: bool = False
    """Score every row again (generated images and activations stay cached)."""
    progress: bool = True
    """Print progress and the table."""

    def check(self) -> None:
        """Raises ValueError naming the field when a setting is out of range."""
        if self.n_latents < 1:
            raise ValueError(f"n_latents must be >= 1, got {self.n_latents}")
        if self.latents is not None and self.latents.strip() != "all":
            parse_latents(self.latents)
        if self.n_images < 1:
            raise ValueError(f"n_images must be >= 1, got {self.n_images}")
        if self.seed_start < 0:
            raise ValueError(f"seed_start must be >= 0, got {self.seed_start}")
        if "{concept}" not in self.template:
            raise ValueError(f"template needs a {{concept}} placeholder, got {self.template!r}")
        if self.probe_images < 10:
            raise ValueError(f"probe_images must be >= 10, got {self.probe_images}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def scoring_hash(self, sae_id: str) -> str:
        """Hash of everything that changes a row's scores besides the explanation (cache key of scored rows)."""
        keep = ("generator", "template", "seed_start", "n_images", "simulator", "probe_images", "probe_seed")
        values = {k: v for k, v in asdict(self).items() if k in keep}
        blob = json.dumps({**values, "sae": sae_id, "version": 1}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


__all__ = ["HELDOUT_TEMPLATE", "HELDOUT_WORLD_SEED", "SEED_SPACE", "EvaluateSettings"]
