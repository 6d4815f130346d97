"""Text-generation backends behind one interface (chat messages in, text out), answer parsers and the stats block.

Backends: a local ``transformers`` model (:mod:`sae_lab.backends.text.hf`), Replicate (:mod:`sae_lab.backends.text.replicate_backend`),
any OpenAI-compatible server (:mod:`sae_lab.backends.text.openai_compat`) and a model-free one (:mod:`sae_lab.backends.text.offline`).
Pick one with :func:`make_backend`; the heavy ones are imported only when asked for.
"""

from sae_lab.backends.text.base import ChatRequest, GenerationResult, TextBackend
from sae_lab.backends.text.offline import OfflineBackend
from sae_lab.backends.text.parse import parse_answer_tag, parse_short_answer
from sae_lab.backends.text.spec import make_backend
from sae_lab.backends.text.stats_block import format_stats_block, parse_stats_block

__all__ = [
    "ChatRequest",
    "GenerationResult",
    "OfflineBackend",
    "TextBackend",
    "format_stats_block",
    "make_backend",
    "parse_answer_tag",
    "parse_short_answer",
    "parse_stats_block",
]
