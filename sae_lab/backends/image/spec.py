"""Pick an image backend from a one-line spec: ``renderer``, ``diffusers[:MODEL]``, ``replicate[:OWNER/NAME]``.

The heavy libraries (``torch``/``diffusers``, ``replicate``) are imported only when their backend is built.
"""

from __future__ import annotations

from typing import Any

from sae_lab.backends.image.base import ImageBackend
from sae_lab.backends.image.diffusers_backend import DEFAULT_DIFFUSERS_MODEL, DiffusersBackend
from sae_lab.backends.image.renderer import RendererBackend
from sae_lab.backends.image.replicate_backend import DEFAULT_REPLICATE_MODEL, ReplicateImageBackend

GRAMMAR = "renderer | diffusers[:<hub id or path>] | replicate[:<owner>/<name>[:<version>]]"


def make_image_backend(spec: str, **opts: Any) -> ImageBackend:
    """The image backend described by ``spec`` (``renderer``, ``diffusers[:MODEL]``, ``replicate[:OWNER/NAME]``).

    Keyword options go to the backend's constructor (``make_image_backend("renderer", image_size=64)``).

    Raises:
        ValueError: for an unknown kind or a malformed argument.
    """
    spec = spec.strip()
    kind, sep, arg = spec.partition(":")
    kind = kind.lower()
    if kind == "renderer" and not arg:
        return RendererBackend(**opts)
    if kind == "diffusers":
        if sep and not arg:
            raise ValueError(f"{spec!r}: 'diffusers:' needs a hub id or a local path (or use plain 'diffusers')")
        return DiffusersBackend(arg or DEFAULT_DIFFUSERS_MODEL, **opts)
    if kind == "replicate":
        if sep and not arg:
            raise ValueError(f"{spec!r}: 'replicate:' needs owner/name (or use plain 'replicate')")
        return ReplicateImageBackend(arg or DEFAULT_REPLICATE_MODEL, **opts)
    raise ValueError(f"unknown image backend spec {spec!r}; expected {GRAMMAR}")
