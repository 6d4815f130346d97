"""Concept presence and image embeddings from a CLIP or SigLIP model (``transformers`` ``AutoModel``).

P(c | x) = sigmoid(a · (cos(image x, text c) + b)). SigLIP's defaults a = 60, b = −0.09 are the values Linear
Explanations uses (Oikarinen & Weng, ICML 2024). CLIP was trained with a softmax over texts, so its cosines carry
no absolute threshold: matched image–text pairs of ViT-B/L CLIPs sit near 0.3 and unrelated ones near 0.2, and
the default a = 50, b = −0.25 puts P = 0.5 between them (0.92 at 0.30, 0.08 at 0.20). Fit both for a model and
domain with :func:`sae_lab.backends.perception.calibrate.calibrate`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from sae_lab.backends.perception.base import PerceptionBackend, check_concepts, check_images, image_key, unit_rows
from sae_lab.backends.perception.cache import ShardedStore, cache_root, namespace
from sae_lab.backends.perception.hub import HFModel, batches

SHARD_IMAGES = 2048
"""Image embeddings per cache shard (one file write per shard)."""
DEFAULT_AB: dict[str, tuple[float, float]] = {"siglip": (60.0, -0.09), "clip": (50.0, -0.25)}
"""Model family -> (a, b) of P = sigmoid(a · (cos + b))."""


def family(model_type: str) -> str:
    """``"siglip"`` or ``"clip"`` for a config's ``model_type``.

    Raises:
        ValueError: a model that is neither.
    """
    if "siglip" in model_type:
        return "siglip"
    if "clip" in model_type:
        return "clip"
    raise ValueError(f"model type {model_type!r} is neither CLIP nor SigLIP; presence needs one of them")


def sigmoid_presence(cos: np.ndarray, a: float, b: float) -> np.ndarray:
    """sigmoid(a · (cos + b)) in float32, computed as a tanh so large logits do not overflow."""
    return (0.5 * (1.0 + np.tanh(0.5 * a * (np.asarray(cos, np.float64) + b)))).astype(np.float32)


def _features(out: torch.Tensor | object) -> torch.Tensor:
    """``get_*_features`` return a tensor (transformers 4) or an output whose ``pooler_output`` is it (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output  # type: ignore[attr-defined]


class HFPerception(PerceptionBackend):
    """CLIP or SigLIP presence and embeddings; image and text embeddings are cached on disk by content.

    Args:
        model: Hub id or local folder of a CLIP or SigLIP checkpoint (the family is read from its config).
        a: Sigmoid slope; None for the family default (:data:`DEFAULT_AB`).
        b: Cosine offset; None for the family default.
        template: Text prompt of a concept, with ``{concept}``.
        cache_dir: Root of the embedding cache; None for ``$SAE_LAB_PERCEPTION_CACHE`` or
            ``~/.cache/sae_lab/perception``.
        text_batch_size: Concept texts per forward pass.
        **hf: Loading, device, dtype and image batch size (:class:`~sae_lab.backends.perception.hub.HFModel`).
    """

    def __init__(
        self,
        model: str,
        *,
        a: float | None = None,
        b: float | None = None,
        template: str = "{concept}",
        cache_dir: str | os.PathLike | None = None,
        text_batch_size: int = 256,
        **hf,
    ) -> None:
        from transformers import AutoModel

        super().__init__()
        if "{concept}" not in template:
            raise ValueError(f"the text template needs a {{concept}} placeholder, got {template!r}")
        self.hf = HFModel(model, **hf)
        self.family = family(self.hf.config.model_type)
        default_a, default_b = DEFAULT_AB[self.family]
        self.a = float(default_a if a is None else a)
        self.b = float(default_b if b is None else b)
        self.template, self.text_batch_size = template, text_batch_size
        self.name = f"hf:{model}"
        self.net = self.hf.load_model(AutoModel)
        self.processor = self.hf.load_processor()
        folder = namespace(cache_root(cache_dir), self.embed_identity)
        self.image_store = ShardedStore(folder / "images", "vectors")
        self.text_store = ShardedStore(folder / "texts", "vectors")

    def _settings(self) -> str:
        return (
            f"family={self.family},weights={self.hf.fingerprint},dtype={self.hf.dtype_name},template={self.template!r}"
        )

    @property
    def embed_identity(self) -> str:
        """What determines the embeddings (the cache namespace): model, weights, dtype and text template."""
        return f"{self.name}({self._settings()})"

    @property
    def identity(self) -> str:
        return f"{self.name}({self._settings()},a={self.a:g},b={self.b:g})"

    # ------------------------------------------------------------------ embeddings
    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        images = check_images(images)
        keys = [image_key(im) for im in images]
        found = self.image_store.get(keys)
        todo = {k: im for k, im in zip(keys, images) if k not in found}
        self.cache_hits += sum(k in found for k in keys)
        # Stored a shard at a time, so a killed run keeps what it embedded.
        for shard in batches(list(todo), max(SHARD_IMAGES, self.hf.batch_size)):
            vectors = np.concatenate([self._embed_images([todo[k] for k in chunk])
                                      for chunk in batches(shard, self.hf.batch_size)])  # fmt: skip
            self.image_store.put(shard, vectors)
            self.images_embedded += len(shard)
            found.update(zip(shard, vectors))
        if not keys:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def text_embeddings(self, concepts: Sequence[str]) -> np.ndarray:
        """(C, D) unit text embeddings of the concepts (through the template)."""
        texts = [self.template.format(concept=c) for c in check_concepts(concepts)]
        found = self.text_store.get(texts)
        todo = [t for t in dict.fromkeys(texts) if t not in found]
        if todo:
            vectors = np.concatenate([self._embed_texts(chunk) for chunk in batches(todo, self.text_batch_size)])
            self.text_store.put(todo, vectors)
            self.texts_embedded += len(todo)
            found.update(zip(todo, vectors))
        return np.stack([found[t] for t in texts]).astype(np.float32, copy=False)

    @property
    def dim(self) -> int:
        config = self.hf.config
        return int(getattr(config, "projection_dim", None) or config.vision_config.hidden_size)

    @torch.inference_mode()
    def _embed_images(self, images: list[Image.Image]) -> np.ndarray:
        pixels = self.hf.pixels(self.processor, images)
        return unit_rows(_features(self.net.get_image_features(pixel_values=pixels)).float().cpu().numpy())

    @torch.inference_mode()
    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        max_length = int(self.hf.config.text_config.max_position_embeddings)
        # SigLIP was trained on texts padded to the full length (64 tokens); CLIP pads to the longest.
        padding = "max_length" if self.family == "siglip" else True
        inputs = self.processor(text=texts, padding=padding, truncation=True, max_length=max_length,
                                return_tensors="pt")  # fmt: skip
        inputs = {k: v.to(self.hf.device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        return unit_rows(_features(self.net.get_text_features(**inputs)).float().cpu().numpy())

    # ------------------------------------------------------------------ presence
    def cosine(self, images: Sequence[Image.Image], concepts: Sequence[str]) -> np.ndarray:
        """(N, C) cosine similarity of every image to every concept text."""
        texts = self.text_embeddings(concepts)
        return self.embed(images) @ texts.T

    def presence(self, images: Sequence[Image.Image], concepts: Sequence[str]) -> np.ndarray:
        return sigmoid_presence(self.cosine(images, concepts), self.a, self.b)

    def close(self) -> None:
        del self.net
