"""Perception backends: concept presence P(c | image), image embeddings and captions, behind small interfaces.

Backends: CLIP / SigLIP (:mod:`~sae_lab.backends.perception.hf`), BLIP and Replicate captioners
(:mod:`~sae_lab.backends.perception.captioners`) and the sketch world's exact annotations
(:mod:`~sae_lab.backends.perception.offline`). Pick one with :func:`make_perception` / :func:`make_captioner`;
the heavy ones are imported only when asked for. Embeddings and captions are cached on disk by image content
(:mod:`~sae_lab.backends.perception.cache`), so no image is embedded twice across latents, methods or runs.
"""

from sae_lab.backends.perception.base import Captioner, PerceptionBackend, check_concepts, image_key, to_rgb
from sae_lab.backends.perception.cache import CACHE_ENV, cache_root
from sae_lab.backends.perception.calibrate import calibrate, fit_sigmoid
from sae_lab.backends.perception.offline import OfflineCaptioner, OfflinePerception, parse_concept
from sae_lab.backends.perception.spec import CAPTIONER_GRAMMAR, PERCEPTION_GRAMMAR, make_captioner, make_perception

__all__ = [
    "CACHE_ENV",
    "CAPTIONER_GRAMMAR",
    "PERCEPTION_GRAMMAR",
    "Captioner",
    "OfflineCaptioner",
    "OfflinePerception",
    "PerceptionBackend",
    "calibrate",
    "cache_root",
    "check_concepts",
    "fit_sigmoid",
    "image_key",
    "make_captioner",
    "make_perception",
    "parse_concept",
    "to_rgb",
]
