"""What DnD holds per latent while it works: the images it is described from and everything found for it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from sae_lab.explainers.dnd.crops import Box
from sae_lab.explainers.dnd.select import CandidateScore, Ranking
from sae_lab.explainers.dnd.summarize import Summary


@dataclass
class Shown:
    """An image a latent is described from: one of its top probe images, or a crop of one."""

    image: Image.Image
    kind: str
    """``original`` or ``crop``."""
    probe_index: int
    """The (parent) image's index in the probe set."""
    box: Box | None
    """The crop's box in the parent, None for an original."""
    activation: float = 0.0
    """The latent's pooled activation on it."""
    key: str = ""
    """Content hash (captions are shared by it)."""
    caption: str | None = None


@dataclass
class LatentWork:
    """Everything DnD found for one latent."""

    latent: int
    top: list[int] = field(default_factory=list)
    """Its top probe images (indices), best first."""
    kept: list[Shown] = field(default_factory=list)
    """The ``n_top`` most activating originals and crops, best first."""
    summaries: list[Summary] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)
    ranking: Ranking | None = None
    weights: list[float] = field(default_factory=list)
    chosen: list[CandidateScore] = field(default_factory=list)
    """The kept candidates, best first."""
    acts: list[list[float]] = field(default_factory=list)
    """Per candidate, the latent's activation on each of its generated images."""
    image_paths: list[list[Path]] = field(default_factory=list)
    """Per candidate, its generated images' files (aligned with ``acts``)."""
    notes: list[str] = field(default_factory=list)
    reason: str | None = None
    """Why there is no explanation."""
    failed: bool = False
    """The reason is a failed backend call (captioner, LLM, image generator), not the latent: its record is marked
    ``detail["failed"]`` and a re-run tries it again."""
    work: Counter = field(default_factory=Counter)
    """Its share of the work: llm_calls, captions, images_generated, forward_images (floats until recorded)."""

    @property
    def ok(self) -> bool:
        return self.reason is None


__all__ = ["LatentWork", "Shown"]
