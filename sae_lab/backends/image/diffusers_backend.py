"""A ``diffusers`` text-to-image pipeline as an image backend (SD-Turbo by default; SDXL-Turbo and SDXL-base work too).

``torch`` and ``diffusers`` are imported only when a backend is built.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from PIL import Image

from sae_lab.backends.image.base import ImageBackend, check_lengths
from sae_lab.errors import check_model_source

logger = logging.getLogger(__name__)

DEFAULT_DIFFUSERS_MODEL = "stabilityai/sd-turbo"


class DiffusersBackend(ImageBackend):
    """A ``diffusers`` text-to-image pipeline loaded with ``AutoPipelineForText2Image.from_pretrained``.

    Every image gets its own CPU ``torch.Generator`` seeded with its seed, so an image does not depend on the
    batch it was drawn in or on the device. Prompts are drawn ``batch_size`` at a time.

    Args:
        model: Hub id or local folder of a pipeline (``stabilityai/sd-turbo``, ``stabilityai/sdxl-turbo``,
            ``stabilityai/stable-diffusion-xl-base-1.0``, …).
        device: ``"auto"`` (CUDA, then MPS, then CPU) or a torch device string.
        dtype: ``"auto"`` (float16 on CUDA, float32 elsewhere), ``"float16"``, ``"bfloat16"`` or ``"float32"``.
        steps: ``num_inference_steps``; None: 1 for turbo models, 30 otherwise.
        guidance: ``guidance_scale``; None: 0.0 for turbo models (they are distilled without it), 7.5 otherwise.
        height: Image height in pixels; None for the pipeline's default.
        width: Image width in pixels; None for the pipeline's default.
        negative_prompt: Sent with every prompt when guidance is on.
        batch_size: Prompts per pipeline call.
        safety_checker: Keep the pipeline's safety checker (None-ed out when False). Flagged images are dropped.
        local_files_only: Never contact the hub.
        variant: Weight variant to load (e.g. ``"fp16"``).
    """

    def __init__(
        self,
        model: str = DEFAULT_DIFFUSERS_MODEL,
        *,
        device: str = "auto",
        dtype: str = "auto",
        steps: int | None = None,
        guidance: float | None = None,
        height: int | None = None,
        width: int | None = None,
        negative_prompt: str | None = None,
        batch_size: int = 8,
        safety_checker: bool = True,
        local_files_only: bool = False,
        variant: str | None = None,
    ) -> None:
        import torch
        from diffusers import AutoPipelineForText2Image

        from sae_lab.backends.text.hf import resolve_device

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        turbo = "turbo" in model.lower()
        self.model = model
        self.name = f"diffusers:{model}"
        self.steps = int(steps if steps is not None else (1 if turbo else 30))
        self.guidance = float(guidance if guidance is not None else (0.0 if turbo else 7.5))
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        self.height, self.width, self.negative_prompt, self.batch_size = height, width, negative_prompt, batch_size
        self.device = resolve_device(device)
        dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
        if dtype == "auto":
            dtype = "float16" if self.device.type == "cuda" else "float32"
        if dtype not in dtypes:
            raise ValueError(f"dtype must be 'auto' or one of {sorted(dtypes)}, got {dtype!r}")
        self.dtype = dtype
        load: dict[str, Any] = {_dtype_keyword(): dtypes[dtype], "local_files_only": local_files_only}
        if variant:
            load["variant"] = variant
        check_model_source(model, "diffusers pipeline")  # a missing path, not a malformed Hub id
        self.pipe = AutoPipelineForText2Image.from_pretrained(model, **load)
        if not safety_checker and getattr(self.pipe, "safety_checker", None) is not None:
            self.pipe.safety_checker = None
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)

    @property
    def identity(self) -> str:
        size = f"{self.height or 'default'}x{self.width or 'default'}"
        return f"{self.name}(steps={self.steps},guidance={self.guidance:g},size={size},dtype={self.dtype})"

    def call_kwargs(self, prompts: Sequence[str]) -> dict[str, Any]:
        """Keyword arguments of one pipeline call (without the generators)."""
        kwargs: dict[str, Any] = {
            "prompt": list(prompts),
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance,
            "output_type": "pil",
        }
        if self.height is not None:
            kwargs["height"] = self.height
        if self.width is not None:
            kwargs["width"] = self.width
        if self.negative_prompt and self.guidance > 1.0:
            kwargs["negative_prompt"] = [self.negative_prompt] * len(prompts)
        return kwargs

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image | None]:
        import torch

        check_lengths(prompts, seeds)
        images: list[Image.Image | None] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = list(prompts[start : start + self.batch_size])
            generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[start : start + len(chunk)]]
            with torch.inference_mode():
                out = self.pipe(**self.call_kwargs(chunk), generator=generators)
            flagged = getattr(out, "nsfw_content_detected", None) or [False] * len(chunk)
            for prompt, image, bad in zip(chunk, out.images, flagged):
                if bad:
                    logger.warning("%s: the safety checker blanked the image for %r; dropping it", self.name, prompt)
                images.append(None if bad else image)
        return images

    def close(self) -> None:
        del self.pipe


def _dtype_keyword() -> str:
    """``dtype`` on diffusers versions that renamed it, ``torch_dtype`` on older ones."""
    from diffusers.pipelines import pipeline_utils

    return "dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"
