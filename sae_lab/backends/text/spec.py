"""Build a text backend from a one-line spec string.

Grammar (the part after the first ``:`` is passed on verbatim)::

    spec      := "offline" | "offline:stats"
               | ("hf" | "transformers") ":" MODEL           MODEL: hub id ("Qwen/Qwen2.5-0.5B-Instruct") or path
               | "replicate" [ ":" OWNER "/" NAME [ ":" VERSION ] ]        default: meta/meta-llama-3-8b-instruct
               | "openai" ":" MODEL "@" BASE_URL          BASE_URL: http(s)://…, e.g. http://localhost:8000/v1

Examples: ``offline``, ``hf:./models/tiny-llama``, ``replicate``, ``replicate:meta/meta-llama-3-70b-instruct``,
``openai:llama3.2:3b@http://localhost:11434/v1``. Every backend's ``name`` is itself a valid spec.
Keyword options go to the backend's constructor (``make_backend("hf:gpt2", device="cpu", dtype="float32")``).
"""

from __future__ import annotations

import re
from typing import Any

from sae_lab.backends.text.base import TextBackend

_OPENAI = re.compile(r"^(?P<model>.+?)@(?P<url>https?://\S+)$")

GRAMMAR = (
    "offline | hf:<hub id or path> | transformers:<hub id or path> | replicate[:<owner>/<name>[:<version>]] | "
    "openai:<model>@<http(s)://base_url>"
)


def make_backend(spec: str, **opts: Any) -> TextBackend:
    """The backend described by ``spec`` (see the module docstring), constructed with ``opts``.

    Raises:
        ValueError: for an unknown kind or a malformed argument.
    """
    spec = spec.strip()
    kind, sep, arg = spec.partition(":")
    kind = kind.lower()
    if kind == "offline" and arg in ("", "stats"):
        from sae_lab.backends.text.offline import OfflineBackend

        return OfflineBackend(**opts)
    if kind in ("hf", "transformers"):
        if not arg:
            raise ValueError(f"{spec!r}: '{kind}:' needs a hub id or a local path")
        from sae_lab.backends.text.hf import HFBackend

        return HFBackend(arg, **opts)
    if kind == "replicate":
        from sae_lab.backends.text.replicate_backend import DEFAULT_MODEL, ReplicateBackend

        if sep and not arg:
            raise ValueError(f"{spec!r}: 'replicate:' needs owner/name (or use plain 'replicate')")
        return ReplicateBackend(arg or DEFAULT_MODEL, **opts)
    if kind == "openai":
        match = _OPENAI.match(arg)
        if not match:
            raise ValueError(f"{spec!r}: expected openai:<model>@<http(s)://base_url>")
        from sae_lab.backends.text.openai_compat import OpenAICompatBackend

        return OpenAICompatBackend(match["model"], match["url"], **opts)
    raise ValueError(f"unknown LLM backend spec {spec!r}; expected {GRAMMAR}")
