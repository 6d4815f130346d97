"""Old import path of the image backends and the image cache; the code lives in the sibling modules."""

from sae_lab.backends.image.base import ImageBackend
from sae_lab.backends.image.cache import ImageCache, image_seed
from sae_lab.backends.image.diffusers_backend import DEFAULT_DIFFUSERS_MODEL, DiffusersBackend
from sae_lab.backends.image.renderer import RendererBackend
from sae_lab.backends.image.replicate_backend import DEFAULT_REPLICATE_MODEL, ReplicateImageBackend
from sae_lab.backends.image.spec import GRAMMAR, make_image_backend

__all__ = [
    "DEFAULT_DIFFUSERS_MODEL",
    "DEFAULT_REPLICATE_MODEL",
    "GRAMMAR",
    "DiffusersBackend",
    "ImageBackend",
    "ImageCache",
    "RendererBackend",
    "ReplicateImageBackend",
    "image_seed",
    "make_image_backend",
]
