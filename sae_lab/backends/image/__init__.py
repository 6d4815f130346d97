"""Text-to-image backends (renderer, diffusers, Replicate) and the content-keyed image cache."""

from sae_lab.backends.image.imagegen import (
    DEFAULT_DIFFUSERS_MODEL,
    GRAMMAR,
    DiffusersBackend,
    ImageBackend,
    ImageCache,
    RendererBackend,
    ReplicateImageBackend,
    image_seed,
    make_image_backend,
)

__all__ = [
    "DEFAULT_DIFFUSERS_MODEL",
    "GRAMMAR",
    "DiffusersBackend",
    "ImageBackend",
    "ImageCache",
    "RendererBackend",
    "ReplicateImageBackend",
    "image_seed",
    "make_image_backend",
]
