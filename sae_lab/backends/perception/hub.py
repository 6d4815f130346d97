"""Loading ``transformers`` models by hub id or path, with one device, dtype and batching policy.

Shared by the CLIP / SigLIP presence backend and the BLIP captioner; :func:`load_pretrained` turns the hub's
"couldn't connect" into an error that names the model and says it needs a download.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from PIL import Image

from sae_lab.backends.perception.base import to_rgb
from sae_lab.backends.text.hf import DTYPES, resolve_device

T = TypeVar("T")


class ModelNotAvailable(OSError):
    """A hub id that is neither a local folder nor in the local Hugging Face cache, with no way to download it."""


def load_pretrained(loader: Callable[..., T], model: str, **kwargs: Any) -> T:
    """``loader(model, **kwargs)`` (any ``from_pretrained``), with a clear error when ``model`` is not at hand.

    Raises:
        FileNotFoundError: ``model`` looks like a path (starts with ``/``, ``.`` or ``~``) that does not exist.
        ModelNotAvailable: a hub id that is not cached locally and cannot be downloaded (``HF_HUB_OFFLINE``,
            ``local_files_only`` or no network).
    """
    if model.startswith(("/", ".", "~")) and not Path(model).expanduser().exists():
        raise FileNotFoundError(f"no model folder at {model!r}")
    try:
        return loader(model, **kwargs)
    except OSError as e:
        if Path(model).expanduser().is_dir():
            raise  # a local folder that is broken: the original message says what is missing
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or kwargs.get("local_files_only")
        why = "HF_HUB_OFFLINE or local_files_only is set" if offline else "the hub could not be reached"
        raise ModelNotAvailable(
            f"model {model!r} is not available locally and {why}: it needs a download from the Hugging Face hub "
            f"(run once with network access and without HF_HUB_OFFLINE, or pass a local folder). ({e})"
        ) from e


def resolve_precision(dtype: str, device: torch.device) -> tuple[torch.dtype, str]:
    """``"auto"`` → bfloat16 on CUDA where supported, else float16; float32 on CPU and MPS."""
    if dtype == "auto":
        if device.type != "cuda":
            dtype = "float32"
        else:
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype], dtype


def fingerprint(model: str, config: Any) -> str:
    """What pins the weights: the hub commit when loaded from the hub cache, else the local files' sizes and times."""
    commit = getattr(config, "_commit_hash", None)
    if commit:
        return str(commit)[:12]
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return "unknown"
    stats = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:12]


def batches(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """Consecutive chunks of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class HFModel:
    """Holds a model's id, device, dtype and batch size, and loads its parts with the shared policy.

    Args:
        model: Hub id or local folder.
        device: ``"auto"`` (CUDA, then MPS, then CPU) or a torch device string.
        dtype: ``"auto"`` (bfloat16/float16 on CUDA, float32 elsewhere), ``"float32"``, ``"float16"``,
            ``"bfloat16"``.
        batch_size: Images per forward pass.
        local_files_only: Never contact the hub.
        revision: Hub revision (branch, tag or commit).
    """

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 32,
        local_files_only: bool = False,
        revision: str | None = None,
    ) -> None:
        from transformers import AutoConfig

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_id, self.batch_size = model, batch_size
        self.device = resolve_device(device)
        self.dtype, self.dtype_name = resolve_precision(dtype, self.device)
        self.load_kwargs: dict[str, Any] = {"local_files_only": local_files_only, "revision": revision}
        self.config = load_pretrained(AutoConfig.from_pretrained, model, **self.load_kwargs)
        self.fingerprint = fingerprint(model, self.config)
        self.preprocess_on_device = True
        """Resize and normalise images on CUDA when the processor can (see :meth:`pixels`)."""

    def load_model(self, cls: Any) -> Any:
        """``cls.from_pretrained`` in this dtype, moved to the device, in eval mode."""
        net = load_pretrained(cls.from_pretrained, self.model_id, dtype=self.dtype, **self.load_kwargs)
        return net.to(self.device).eval()

    def load_processor(self) -> Any:
        from transformers import AutoProcessor

        return load_pretrained(AutoProcessor.from_pretrained, self.model_id, **self.load_kwargs)

    def pixels(self, processor: Any, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, 3, H, W) pixel values of RGB versions of ``images``, on the device in the model's dtype.

        Torchvision-backed ("fast") image processors resize and normalise on the model's accelerator, where the
        CPU would otherwise be the bottleneck (``preprocess_on_device``)."""
        kwargs: dict[str, Any] = {}
        if self.preprocess_on_device and self.device.type == "cuda" and _torchvision_backed(processor):
            kwargs["device"] = self.device
        inputs = processor(images=[to_rgb(im) for im in images], return_tensors="pt", **kwargs)
        return inputs["pixel_values"].to(self.device, self.dtype)


def _torchvision_backed(processor: Any) -> bool:
    """Whether a processor's image processor takes ``device`` (transformers 5: TorchvisionBackend; 4: *Fast)."""
    image_processor = getattr(processor, "image_processor", processor)
    try:
        from transformers.image_processing_backends import TorchvisionBackend as Fast
    except ImportError:  # transformers 4
        try:
            from transformers.image_processing_utils_fast import BaseImageProcessorFast as Fast
        except ImportError:
            return False
    return isinstance(image_processor, Fast)
