"""Captioners: a local BLIP (``BlipForConditionalGeneration``, unconditional) and Replicate image-to-text models."""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import torch
from PIL import Image

from sae_lab.backends.perception.base import Captioner, to_rgb
from sae_lab.backends.perception.cache import ShardedStore, cache_root, namespace
from sae_lab.backends.perception.hub import HFModel, batches

logger = logging.getLogger(__name__)

MAX_NEW_TOKENS = 32
DEFAULT_REPLICATE_CAPTIONER = "salesforce/blip"


def _store(cache_dir: str | os.PathLike | None, identity: str) -> ShardedStore:
    return ShardedStore(namespace(cache_root(cache_dir), identity) / "captions", "texts")


class BlipCaptioner(Captioner):
    """Unconditional captions from a BLIP checkpoint (greedy, at most ``max_new_tokens`` new tokens).

    A batch that fails is retried image by image, so one bad image gets None and the others their captions.

    Args:
        model: Hub id or local folder (e.g. ``Salesforce/blip-image-captioning-base``).
        max_new_tokens: Caption length limit in tokens (1–32).
        cache_dir: Root of the caption cache (see :func:`~sae_lab.backends.perception.cache.cache_root`).
        **hf: Loading, device, dtype and batch size (:class:`~sae_lab.backends.perception.hub.HFModel`).
    """

    def __init__(
        self, model: str, *, max_new_tokens: int = MAX_NEW_TOKENS, cache_dir: str | os.PathLike | None = None, **hf
    ) -> None:
        from transformers import BlipForConditionalGeneration

        if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
            raise ValueError(f"max_new_tokens must be in [1, {MAX_NEW_TOKENS}], got {max_new_tokens}")
        self.hf = HFModel(model, **hf)
        self.name, self.max_new_tokens = f"hf:{model}", max_new_tokens
        self.net = self.hf.load_model(BlipForConditionalGeneration)
        self.processor = self.hf.load_processor()
        super().__init__(_store(cache_dir, self.identity))

    @property
    def identity(self) -> str:
        return (f"{self.name}(weights={self.hf.fingerprint},dtype={self.hf.dtype_name},"
                f"max_new_tokens={self.max_new_tokens})")  # fmt: skip

    def _caption(self, images: list[Image.Image]) -> list[str | None]:
        return [c for chunk in batches(images, self.hf.batch_size) for c in self._chunk(chunk)]

    def _chunk(self, images: list[Image.Image]) -> list[str | None]:
        try:
            return self._generate(images)
        except Exception as e:  # noqa: BLE001 -- one bad image must not cost the batch its captions
            if len(images) > 1:
                logger.warning("%s: a batch of %d failed (%s); captioning one by one", self.name, len(images), e)
                return [c for im in images for c in self._chunk([im])]
            logger.warning("%s: an image failed: %s: %s", self.name, type(e).__name__, e)
            return [None]

    @torch.inference_mode()
    def _generate(self, images: list[Image.Image]) -> list[str | None]:
        pixels = self.hf.pixels(self.processor, images)
        tokens = self.net.generate(pixel_values=pixels, max_new_tokens=self.max_new_tokens, do_sample=False)
        texts = self.processor.batch_decode(tokens, skip_special_tokens=True)
        return [t.strip() for t in texts]

    def close(self) -> None:
        del self.net


def _replicate_model_class() -> type:
    """A :class:`ReplicateBackend` whose prediction input is the image (and ``extra_input``) only."""
    from sae_lab.backends.text.base import ChatRequest
    from sae_lab.backends.text.remote import image_data_url
    from sae_lab.backends.text.replicate_backend import ReplicateBackend

    class _CaptionModel(ReplicateBackend):
        def model_input(self, request: ChatRequest) -> dict[str, Any]:
            return {self.image_key: image_data_url(request.images[0]), **self.extra_input}

    return _CaptionModel


class ReplicateCaptioner(Captioner):
    """Captions from a Replicate image-to-text model through the official ``replicate`` client.

    Reuses the text backend's Replicate machinery: the token comes from ``REPLICATE_API_TOKEN`` only and is
    never logged, predictions run ``concurrency`` at a time, and HTTP 429/5xx, timeouts and connection errors are
    retried with back-off. The image goes in ``input[image_key]`` as a PNG data URL; a leading ``Caption:`` (as
    ``salesforce/blip`` answers) is stripped.

    Args:
        model: ``owner/name`` or ``owner/name:version``.
        image_key: The model's input field for the image.
        extra_input: Extra model inputs (e.g. ``{"task": "image_captioning"}``); part of the identity.
        cache_dir: Root of the caption cache.
        **client: ``base_url``, ``concurrency``, ``timeout_s``, ``poll_interval_s``, ``retry``, ``transport``
            (see :class:`~sae_lab.backends.text.replicate_backend.ReplicateBackend`).
    """

    def __init__(
        self,
        model: str = DEFAULT_REPLICATE_CAPTIONER,
        *,
        image_key: str = "image",
        extra_input: dict[str, Any] | None = None,
        cache_dir: str | os.PathLike | None = None,
        **client: Any,
    ) -> None:
        self.backend = _replicate_model_class()(
            model, accepts_images=True, image_key=image_key, extra_input=extra_input, **client
        )
        self.name = self.backend.name
        super().__init__(_store(cache_dir, self.identity))

    @property
    def identity(self) -> str:
        import json

        extra = json.dumps(self.backend.extra_input, sort_keys=True)
        return f"{self.name}(image_key={self.backend.image_key},input={extra})"

    def _caption(self, images: list[Image.Image]) -> list[str | None]:
        from sae_lab.backends.text.base import ChatRequest

        requests = [ChatRequest.from_prompt("caption", images=[to_rgb(im)]) for im in images]
        out: list[str | None] = []
        for result in self.backend.generate(requests):
            text = re.sub(r"(?i)^\s*caption:\s*", "", result.text).strip() if result.ok else ""
            if not text and result.ok:
                logger.warning("%s: empty caption", self.name)
            out.append(text or None)
        return out

    def close(self) -> None:
        self.backend.close()
