"""What a report pass reads and keeps: one dataclass behind ``report``'s options (and ``--config``),
``ReportCallback``'s init args and ``build_report``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

MATCH_AUC = 0.9
"""A latent matches a primitive, and the primitive is recovered, at image-level AUC ≥ this (DESIGN.md)."""
KNOCKOUT_LATENTS = 256
"""Default number of latents whose knockout is measured (evenly spaced ids; the rest get delta_measured null)."""
SPLITS = ("train", "val", "test")
PASS_FIELDS = ("split", "data", "n_exemplars", "quantile", "batch_size", "num_workers", "knockout_latents",
               "overwrite", "progress")  # fmt: skip
"""The fields that shape the pass itself (``run_report``'s keyword settings)."""


@dataclass(frozen=True)
class ReportSettings:
    """Settings of one report pass, checked when made."""

    run: str | None = None
    """Report folder, e.g. reports/quickstart (other stages' files there stay)."""
    sae: str | None = None
    """The SAE's export folder (cfg.json + sae.safetensors)."""
    classifier: str | None = None
    """Classifier checkpoint (None: the one in the SAE's cfg.json)."""
    device: str | None = None
    """cpu, cuda, cuda:1 … (None: cuda when available)."""
    split: Literal["train", "val", "test"] | None = None
    """Images to measure on (None: test when the data has a held-out test split, else val)."""
    data: str | None = None
    """Image source override (None: the classifier's own data)."""
    n_exemplars: int = 16
    """Exemplar images kept per latent."""
    quantile: float = 0.99
    """q of the on-threshold τ (an image is 'on' for a latent when its z_max ≥ τ)."""
    batch_size: int = 256
    """Images per forward pass."""
    num_workers: int = 0
    """DataLoader worker processes."""
    knockout_latents: int | Literal["all"] | None = KNOCKOUT_LATENTS
    """Latents whose knockout is measured: a number (evenly spaced ids; 0: none) or 'all' (None also means all)."""
    overwrite: bool = False
    """Replace a report already in the run folder."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self):
        if self.knockout_latents == "all":
            object.__setattr__(self, "knockout_latents", None)
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)} (or None), got {self.split!r}")
        if self.n_exemplars < 1 or self.batch_size < 1:
            raise ValueError(f"n_exemplars and batch_size must be >= 1, got {self.n_exemplars} and {self.batch_size}")
        if not 0.0 <= self.quantile <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {self.quantile}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        k = self.knockout_latents
        if k is not None and (not isinstance(k, int) or k < 0):
            raise ValueError(f"knockout_latents must be >= 0, 'all' or None, got {self.knockout_latents!r}")

    def pass_settings(self) -> dict:
        """The fields that shape the pass (``run_report``'s keyword settings)."""
        return {k: getattr(self, k) for k in PASS_FIELDS}

    def record(self, num_knockout: int) -> dict:
        """The ``settings`` block of ``report.json``."""
        kept = {k: v for k, v in asdict(self).items() if k in ("split", "quantile", "n_exemplars")}
        return {**kept, "match_auc": MATCH_AUC, "knockout_latents": num_knockout}
