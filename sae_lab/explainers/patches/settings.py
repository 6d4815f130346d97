"""``explain patches``' settings: one checked dataclass behind the command line, ``--config`` and the Python API."""

from __future__ import annotations

from dataclasses import dataclass

from sae_lab.explainers.base import ExplainSettings

PROMPT = "What are useful features for distinguishing a {class} in a sketch? Please give me a list of short phrases."
"""The vocabulary question asked per class (Zhao et al., arXiv 2310.10708, adapted to sketches)."""

_NOT_IN_HASH = ("run", "latents", "device", "overwrite", "batch_size", "chunk")
"""Settings that change where, which latents or how fast, never an explanation."""


@dataclass
class PatchSettings(ExplainSettings):
    """Patch explanations (Zhao et al., arXiv 2310.10708): occlusion patches, an LLM vocabulary per class and a
    perception backend naming what the patches show."""

    llm: str = "offline"
    """Vocabulary LLM: offline (the class's primitives and their synonyms) | hf:<hub id or path> |
    replicate[:<owner>/<name>] | openai:<model>@<base url>."""
    perception: str = "offline"
    """Scores every phrase in every patch: ``offline`` (the sketch world's annotations of what lies inside the
    patch) or ``hf:<hub id or path>`` (CLIP / SigLIP)."""
    prompt: str = PROMPT
    """The vocabulary question, with ``{class}``."""
    top_images: int = 10
    """Top probe images (by ``z_max``) occluded per latent."""
    occluder: int = 16
    """Side of the square occluder in pixels at the classifier's input size (filled with paper, ink 0)."""
    stride: int = 8
    """Step of the sliding occluder in pixels (the last row and column of positions touch the far edges)."""
    keep: float = 0.5
    """The patch is the bounding box of the occluder squares whose drop of ``z_max`` reaches this share of the
    image's largest drop."""
    split: str | None = None
    """Dataset split of the probe images (default: ``test`` when the data has one, else ``val``)."""
    n_images: int = 2000
    """Probe images (a seeded subset of the split); top images come from them, the ablation uses their held-out
    20 %."""
    ablation_classes: int = 3
    """Classes reported per latent in ``detail["ablation"]``: the largest accuracy drops when it is zeroed."""
    max_retries: int = 2
    """Re-asks after a vocabulary answer without phrases, before falling back to the offline vocabulary."""
    batch_size: int = 256
    """Images (occluded variants included) per classifier + SAE forward pass."""
    chunk: int = 512
    """Latents explained together: an image among several of their top images is occluded once for all of them
    (more latents share more); records are appended after each chunk, so a killed run loses at most one."""

    def settings_hash(self, exclude=_NOT_IN_HASH) -> str:  # noqa: D102 (the base's)
        return super().settings_hash(exclude)

    def check(self) -> None:
        """Raises ValueError naming the field when a setting is out of range."""
        super().check()
        for name in ("top_images", "occluder", "stride", "batch_size", "chunk", "ablation_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if not 0 < self.keep <= 1:
            raise ValueError(f"keep must be in (0, 1], got {self.keep}")
        if self.n_images < 20:
            raise ValueError(f"n_images must be >= 20 (the ablation uses a held-out 20 %), got {self.n_images}")
        if "{class}" not in self.prompt:
            raise ValueError(f"prompt needs a {{class}} placeholder, got {self.prompt!r}")
        _check_specs(self.llm, self.perception)

    def check_image(self, image_size: int) -> None:
        """Raises ValueError naming ``occluder`` / ``stride`` when they do not fit images of side ``image_size``."""
        if self.occluder > image_size:
            raise ValueError(f"occluder ({self.occluder} px) is larger than the images ({image_size} px)")
        if self.stride > image_size:
            raise ValueError(f"stride ({self.stride} px) is larger than the images ({image_size} px)")


def _check_specs(llm: str, perception: str) -> None:
    """The backend specs' grammar, checked before anything is loaded (the backends check the rest)."""
    from sae_lab.backends.perception.spec import PERCEPTION_GRAMMAR
    from sae_lab.backends.text.spec import GRAMMAR

    kind, sep, arg = llm.strip().partition(":")
    kind = kind.lower()
    ok = (kind == "offline" and arg in ("", "stats")) or (kind in ("hf", "transformers") and arg) or \
        (kind == "replicate") or (kind == "openai" and "@" in arg)  # fmt: skip
    if not ok:
        raise ValueError(f"llm: unknown LLM backend spec {llm!r}; expected {GRAMMAR}")
    kind, sep, arg = perception.strip().partition(":")
    if not ((kind.lower() == "offline" and not sep) or (kind.lower() == "hf" and arg.strip())):
        raise ValueError(f"perception: unknown perception backend spec {perception!r}; expected {PERCEPTION_GRAMMAR}")


__all__ = ["PROMPT", "PatchSettings"]
