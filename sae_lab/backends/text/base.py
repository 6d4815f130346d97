"""The text-generation interface every LLM backend implements: messages in, text out."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")


@dataclass
class ChatRequest:
    """One chat completion to run.

    Attributes:
        messages: The conversation, a list of ``{"role": "system" | "user" | "assistant", "content": str}``.
        images: PIL images attached to the last user turn; only backends with ``accepts_images`` see them.
        max_new_tokens: Upper bound on generated tokens.
        temperature: Sampling temperature; 0 means greedy decoding.
        seed: Seed for sampling (ignored by greedy decoding and by servers that do not take one).
    """

    messages: list[dict[str, str]]
    images: list[Image.Image] = field(default_factory=list)
    max_new_tokens: int = 256
    temperature: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.messages:
            raise ValueError("ChatRequest needs at least one message")
        for message in self.messages:
            if set(message) != {"role", "content"}:
                raise ValueError(f"a message needs exactly the keys 'role' and 'content', got {sorted(message)}")
            if message["role"] not in ROLES:
                raise ValueError(f"unknown role {message['role']!r}; expected one of {ROLES}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")

    @classmethod
    def from_prompt(cls, prompt: str, system: str | None = None, **kwargs: Any) -> ChatRequest:
        """A single user turn, optionally preceded by a system prompt."""
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
        return cls(messages=messages, **kwargs)


@dataclass
class GenerationResult:
    """The outcome of one :class:`ChatRequest`; exactly one of ``text`` and ``error`` is set.

    Attributes:
        text: The generated text (only the new tokens), or None when the request failed.
        error: Why the request failed (secrets scrubbed), or None on success.
        attempts: How many times the request was sent (1 without retries).
        seconds: Wall time spent on this request, retries and back-off included.
    """

    text: str | None
    error: str | None = None
    attempts: int = 1
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


class TextBackend(ABC):
    """A text generator: a batch of chat requests in, one result per request out, in order.

    ``generate`` never raises for a failing request: that request gets a result with ``error`` set and the
    others still finish. Subclasses set ``name`` (e.g. ``"transformers:<model>"``) and ``accepts_images``.
    """

    name: str = "abstract"
    accepts_images: bool = False

    @abstractmethod
    def generate(self, requests: Sequence[ChatRequest]) -> list[GenerationResult]:
        """Run every request; results come back in the order of ``requests``."""

    def generate_one(self, request: ChatRequest) -> GenerationResult:
        return self.generate([request])[0]

    def close(self) -> None:
        """Release connections or models; the backend is unusable afterwards."""
        return None

    def __enter__(self) -> TextBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def _images_for(self, request: ChatRequest) -> list[Image.Image]:
        """The request's images if this backend takes them; otherwise none, with a warning (once per backend)."""
        if not request.images:
            return []
        if self.accepts_images:
            return list(request.images)
        if not getattr(self, "_warned_images", False):
            logger.warning("%s does not accept images; dropping them and sending text only", self.name)
            self._warned_images = True
        return []
