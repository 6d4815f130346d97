"""Build a perception backend or a captioner from a one-line spec.

Grammar::

    perception := "offline" | "hf:" MODEL                      MODEL: a CLIP / SigLIP hub id or local folder
    captioner  := "offline" | "hf:" MODEL                      MODEL: a BLIP hub id or local folder
                | "replicate" [ ":" OWNER "/" NAME [ ":" VERSION ] ]          default: salesforce/blip

Examples: ``offline``, ``hf:google/siglip-so400m-patch14-384``, ``hf:openai/clip-vit-large-patch14``,
``hf:Salesforce/blip-image-captioning-base``, ``replicate:salesforce/blip``. Keyword options go to the
constructor (``make_perception("hf:./tiny-clip", device="cpu", cache_dir="cache")``); the offline backends accept
and ignore the loading and caching options (``cache_dir``, ``device``, ``dtype``, ``batch_size``), so a caller can
pass the same options whatever the spec.
"""

from __future__ import annotations

from typing import Any

from sae_lab.backends.perception.base import Captioner, PerceptionBackend

PERCEPTION_GRAMMAR = "offline | hf:<CLIP or SigLIP hub id or path>"
CAPTIONER_GRAMMAR = "offline | hf:<BLIP hub id or path> | replicate[:<owner>/<name>[:<version>]]"
_OFFLINE_IGNORES = ("cache_dir", "device", "dtype", "batch_size")


def _split(spec: str) -> tuple[str, str, str]:
    kind, sep, arg = spec.strip().partition(":")
    return kind.lower(), sep, arg.strip()


def _offline_opts(spec: str, opts: dict[str, Any]) -> None:
    extra = sorted(set(opts) - set(_OFFLINE_IGNORES))
    if extra:
        raise TypeError(f"{spec!r} takes no options {extra}")


def make_perception(spec: str, **opts: Any) -> PerceptionBackend:
    """The presence / embedding backend ``spec`` names (see the module docstring).

    Raises:
        ValueError: an unknown spec (the message gives the grammar) or a model that is neither CLIP nor SigLIP.
        ModelNotAvailable: a hub id not available locally that would need a download.
    """
    kind, sep, arg = _split(spec)
    if kind == "offline" and not sep:
        from sae_lab.backends.perception.offline import OfflinePerception

        _offline_opts(spec, opts)
        return OfflinePerception()
    if kind == "hf" and arg:
        from sae_lab.backends.perception.hf import HFPerception

        return HFPerception(arg, **opts)
    raise ValueError(f"unknown perception backend spec {spec!r}; expected {PERCEPTION_GRAMMAR}")


def make_captioner(spec: str, **opts: Any) -> Captioner:
    """The captioner ``spec`` names (see the module docstring).

    Raises:
        ValueError: an unknown spec (the message gives the grammar), a malformed Replicate model, or
            ``REPLICATE_API_TOKEN`` unset for ``replicate``.
        ModelNotAvailable: a hub id not available locally that would need a download.
    """
    kind, sep, arg = _split(spec)
    if kind == "offline" and not sep:
        from sae_lab.backends.perception.offline import OfflineCaptioner

        _offline_opts(spec, opts)
        return OfflineCaptioner()
    if kind == "hf" and arg:
        from sae_lab.backends.perception.captioners import BlipCaptioner

        return BlipCaptioner(arg, **opts)
    if kind == "replicate" and (arg or not sep):
        from sae_lab.backends.perception.captioners import DEFAULT_REPLICATE_CAPTIONER, ReplicateCaptioner

        return ReplicateCaptioner(arg or DEFAULT_REPLICATE_CAPTIONER, **opts)
    raise ValueError(f"unknown captioner spec {spec!r}; expected {CAPTIONER_GRAMMAR}")
