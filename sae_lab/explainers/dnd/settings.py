"""``explain dnd``'s settings: one checked dataclass behind the command line, ``--config`` and the Python API."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from sae_lab.explainers.base import ExplainSettings

SKETCH_TEMPLATE = "a simple black-and-white line drawing of {concept}"
"""The sketch domain's prompt template (the same as LINE's, so both share generated images)."""

_KINDS = {
    "llm": ("offline", "hf", "transformers", "replicate", "openai"),
    "captioner": ("offline", "hf", "replicate"),
    "perception": ("offline", "hf"),
    "images": ("renderer", "diffusers", "replicate"),
}
"""The backend kinds each role takes (the part of a spec before ``:``); the factories check the rest."""

_GRAMMAR = {
    "llm": "offline (a noun phrase of the captions, sampled by frequency) | hf:<hub id or path> | "
    "replicate[:<owner>/<name>] | openai:<model>@<url>",
    "captioner": "offline | hf:<BLIP hub id or path> | replicate[:<owner>/<name>]",
    "perception": "offline | hf:<CLIP or SigLIP hub id or path>",
    "images": "renderer | diffusers[:<hub id or path>] | replicate[:<owner>/<name>]",
}

_NO_EFFECT = ("run", "latents", "device", "overwrite", "batch_size", "chunk_size", "image_cache", "cache_dir")
"""Settings that change where or how fast the work happens, never an explanation."""


@dataclass
class DndSettings(ExplainSettings):
    """Describe-and-Dissect (Bai et al., TMLR 2025): crops → captions → LLM summaries → generated images → best."""

    llm: str = "offline"
    """Summariser: offline (a noun phrase of the captions drawn by frequency at ``temperature``) |
    hf:<hub id or path> | replicate[:<owner>/<name>] | openai:<model>@<url>."""
    captioner: str = "offline"
    """Captioner: offline (the sketch world's annotations) | hf:<BLIP hub id or path> | replicate[:<owner>/<name>]."""
    perception: str = "offline"
    """Image embeddings for the similarity weight: offline (Jaccard of annotated primitives) | hf:<CLIP or SigLIP>."""
    images: str = "renderer"
    """Image generator: renderer | diffusers[:<hub id or path>] (default stabilityai/sd-turbo) |
    replicate[:<owner>/<name>]."""
    template: str = SKETCH_TEMPLATE
    """Prompt template with {concept}; fit it to the domain (sketches, not photos)."""
    pooling: str = "avg"
    """An image's activation: the mean (``avg``, DnD's default) or ``max`` of the latent over its tokens."""
    split: str | None = None
    """Dataset split of the probe images (default: ``test`` when the data has one, else ``val``)."""
    probe_images: int = 2000
    """Probe images the top images are taken from (a seeded subset of the split)."""
    n_top: int = 10
    """Top probe images per latent, and images kept after re-scoring them with their crops."""
    crops_per_image: int = 4
    """Most attention crops per top image."""
    n_summaries: int = 5
    """LLM summaries per latent, the captions shuffled each time."""
    n_images: int = 10
    """Images generated per candidate concept."""
    beta: int = 5
    """Rank score: mean squared rank of a candidate's best ``beta`` images."""
    top_k: int = 10
    """Similarity weight: a candidate's images among the latent's ``top_k`` best generated images count."""
    keep: int = 3
    """Candidates kept per latent (the best is the explanation)."""
    max_retries: int = 2
    """Re-asks per unusable LLM answer before the offline noun-phrase rule answers instead."""
    temperature: float = 0.3
    """LLM sampling temperature (DnD's own value; the offline summariser samples at it too, 0 = most frequent)."""
    max_new_tokens: int = 32
    """LLM answer budget in tokens."""
    steps: int | None = None
    """Diffusion inference steps (default: 1 for turbo models, else 30)."""
    guidance: float | None = None
    """Diffusion guidance scale (default: 0 for turbo models, else 7.5)."""
    dtype: str = "auto"
    """dtype of the diffusers, BLIP and CLIP models: auto (fp16 on CUDA), float16, bfloat16, float32."""
    image_batch_size: int = 8
    """Prompts per diffusion pipeline call."""
    safety_checker: bool = True
    """Keep the diffusers pipeline's safety checker."""
    batch_size: int = 64
    """Images per classifier + SAE forward pass."""
    chunk_size: int = 64
    """Latents explained together (their records are appended when the chunk finishes)."""
    image_cache: str | None = None
    """Folder of generated images (default: LINE's reports/<run>/line/cache, so both methods share them)."""
    cache_dir: str | None = None
    """Caption and embedding cache (default: $SAE_LAB_PERCEPTION_CACHE or ~/.cache/sae_lab/perception)."""

    def check(self) -> None:
        """Raises ValueError naming the field when a setting is out of range or a backend spec is unknown."""
        super().check()
        for role, kinds in _KINDS.items():
            spec = str(getattr(self, role)).strip()
            if spec.partition(":")[0].lower() not in kinds:
                raise ValueError(f"{role}: unknown backend spec {spec!r}; expected {_GRAMMAR[role]}")
        if self.perception.strip() == "offline" and self.images.strip() != "renderer":
            raise ValueError(f"perception 'offline' reads the sketch world's annotations, which {self.images!r} "
                             "images lack; give perception hf:<CLIP or SigLIP>")  # fmt: skip
        if "{concept}" not in self.template:
            raise ValueError(f"template needs a {{concept}} placeholder, got {self.template!r}")
        if self.pooling not in ("avg", "max"):
            raise ValueError(f"pooling must be 'avg' or 'max', got {self.pooling!r}")
        if self.split not in (None, "train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {self.split!r}")
        for name in ("probe_images", "n_top", "n_summaries", "n_images", "beta", "top_k", "keep", "max_new_tokens",
                     "image_batch_size", "batch_size", "chunk_size"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.crops_per_image < 0 or self.max_retries < 0:
            raise ValueError("crops_per_image and max_retries must be >= 0")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")

    def settings_hash(self, exclude: tuple[str, ...] = _NO_EFFECT) -> str:
        """Hash of the settings an explanation depends on (not where it runs, how fast, or which latents)."""
        values = {k: v for k, v in asdict(self).items() if k not in exclude}
        return hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def image_options(self, image_size: int) -> dict[str, Any]:
        """Constructor options of the image backend ``images`` names (the renderer draws at ``image_size``)."""
        kind = self.images.strip().partition(":")[0].lower()
        if kind == "renderer":
            return {"image_size": image_size}
        if kind == "diffusers":
            return {"steps": self.steps, "guidance": self.guidance, "dtype": self.dtype, "device": self.device or "auto",
                    "batch_size": self.image_batch_size, "safety_checker": self.safety_checker}  # fmt: skip
        return {"steps": self.steps, "guidance": self.guidance}

    def model_options(self, spec: str) -> dict[str, Any]:
        """Options of a perception backend or captioner: device, dtype and cache for ``hf:``, the cache elsewhere."""
        kind = spec.strip().partition(":")[0].lower()
        if kind == "hf":
            return {"device": self.device or "auto", "dtype": self.dtype, "cache_dir": self.cache_dir}
        return {"cache_dir": self.cache_dir}


__all__ = ["SKETCH_TEMPLATE", "DndSettings"]
