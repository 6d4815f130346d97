"""Text-to-image backends (renderer, diffusers, Replicate), the spec that picks one, and the image cache."""

from sae_lab.backends.image.base import ImageBackend
from sae_lab.backends.image.cache import ImageCache, image_seed
from sae_lab.backends.image.diffusers_backend import DEFAULT_DIFFUSERS_MODEL, DiffusersBackend
from sae_lab.backends.image.renderer import RendererBackend
from sae_lab.backends.image.replicate_backend import ReplicateImageBackend
from sae_lab.backends.image.spec import GRAMMAR, make_image_backend

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
