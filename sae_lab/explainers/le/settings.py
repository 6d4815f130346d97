"""``explain le``'s settings: one checked dataclass behind the command line, ``--config`` and the Python API."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from sae_lab.explainers.base import ExplainSettings

VARIANTS = {"label": "le-label", "vlm": "le-vlm"}
"""LE's variants and the explanation file each writes."""

_VARIANT_FIELDS = {"label": (), "vlm": ("perception", "concept_file", "min_top5", "min_std")}
"""Settings only one variant reads; the other's records do not depend on them."""


@dataclass
class LeSettings(ExplainSettings):
    """Linear Explanations (Oikarinen & Weng, ICML 2024): each latent as a sparse linear mix of concepts."""

    variants: str = "label,vlm"
    """Which LE to run: ``label`` (class one-hots + superclasses), ``vlm`` (a perception backend's concept
    presences), or both, comma-separated."""
    perception: str = "offline"
    """LE(VLM)'s perception backend: ``offline`` (the sketch world's annotations) or ``hf:<hub id or path>``
    (CLIP / SigLIP)."""
    concept_file: str | None = None
    """A text file of extra concepts for LE(VLM), one word or phrase per line (added to the class names,
    primitives and synonyms)."""
    pooling: str = "avg"
    """The target: each image's ``avg`` (mean over tokens, LE's default) or ``max`` of the latent's activation."""
    split: str | None = None
    """Dataset split of the probe images (default: ``test`` when the data has one, else ``val``)."""
    n_images: int = 2000
    """Probe images (a seeded subset of the split), divided 70 / 10 / 20 into fit / select / held out."""
    lam: float = 0.05
    """λ of the elastic net that ranks the concepts (LE's ``glm_lambda``)."""
    alpha: float = 0.99
    """α of that elastic net: the L1 share of its penalty."""
    max_concepts: int = 10
    """Most concepts in an explanation (LE's ``max_length``)."""
    min_gain: float = 0.02
    """Once an explanation has a concept, a candidate adding less than this to the select-split r is dropped
    for good (LE's ``tolerance``)."""
    width: int = 10
    """Candidates tried per round: the first untried ones of the ranking."""
    min_top5: float = 0.5
    """LE(VLM) keeps a concept only when the mean of its 5 largest presences reaches this."""
    min_std: float = 1e-5
    """... and the std of its presences reaches this."""
    batch_size: int = 256
    """Images per classifier + SAE forward pass of the probe set."""

    def variant_list(self) -> list[str]:
        """The variants to run, in ``label``, ``vlm`` order."""
        asked = {v.strip().lower() for v in self.variants.split(",") if v.strip()}
        return [v for v in VARIANTS if v in asked]

    def check(self) -> None:
        """Raises ValueError naming the field when a setting is out of range."""
        super().check()
        asked = {v.strip().lower() for v in self.variants.split(",") if v.strip()}
        if not asked or asked - set(VARIANTS):
            raise ValueError(f"variants must be label, vlm or label,vlm; got {self.variants!r}")
        if self.pooling not in ("avg", "max"):
            raise ValueError(f"pooling must be 'avg' or 'max', got {self.pooling!r}")
        if self.n_images < 20:
            raise ValueError(f"n_images must be >= 20 (fit/select/held-out splits of 70/10/20 %), got {self.n_images}")
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        for name in ("max_concepts", "width", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.min_gain < 1:
            raise ValueError(f"min_gain must be in [0, 1), got {self.min_gain}")
        if not 0 <= self.min_top5 <= 1:
            raise ValueError(f"min_top5 must be in [0, 1], got {self.min_top5}")
        if self.min_std < 0:
            raise ValueError(f"min_std must be >= 0, got {self.min_std}")
        if "vlm" in asked and not self.perception.strip():
            raise ValueError("perception must name a backend (offline, hf:<hub id or path>)")
        if self.concept_file is not None and not Path(self.concept_file).is_file():
            raise ValueError(f"concept_file {self.concept_file} does not exist")

    def variant_hash(self, variant: str) -> str:
        """Hash of the settings one variant's records depend on (the concept file by its content)."""
        skip = {"run", "latents", "device", "overwrite", "variants", "batch_size"}
        skip |= {f for v, fs in _VARIANT_FIELDS.items() if v != variant for f in fs}
        values = {k: v for k, v in asdict(self).items() if k not in skip}
        values["variant"] = variant
        if values.get("concept_file"):
            values["concept_file"] = hashlib.sha1(Path(self.concept_file).read_bytes()).hexdigest()
        return hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]


__all__ = ["VARIANTS", "LeSettings"]
