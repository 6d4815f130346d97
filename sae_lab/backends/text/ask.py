"""Ask, parse, ask again: many chats through one text backend, each re-asked until its answer parses.

Every caller that needs a structured answer from an LLM (the stats labeller, LINE's proposer, DnD's summaries,
the patch vocabulary) goes through :func:`ask_until_parsed`: all pending chats go out in one batched
``generate`` call per round; an answer that does not parse is shown back to the model with the reason and a
reminder of the format, and asked again; what is still unusable after ``max_retries`` re-asks is returned as
failed with every reason, so the caller can fall back and record why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sae_lab.backends.text.base import ChatRequest, TextBackend

ECHO_CHARS = 600
"""Length of a rejected answer shown back to the model."""


@dataclass
class Asked:
    """The outcome of one chat."""

    value: Any = None
    """What ``parse`` made of the accepted answer; None when none was accepted."""
    text: str | None = None
    """The last raw answer."""
    attempts: int = 0
    """Requests sent, the backend's own transport retries included."""
    rounds: int = 0
    """Rounds this chat took part in (1 + re-asks)."""
    seconds: float = 0.0
    """Time its requests took."""
    errors: list[str] = field(default_factory=list)
    """Why each rejected answer (or failed request) was rejected, in order."""
    transport_failed: bool = False
    """The last request failed in the backend (not a parse problem)."""

    @property
    def ok(self) -> bool:
        return self.value is not None


def ask_until_parsed(
    backend: TextBackend,
    chats: Sequence[list[dict]],
    parse: Callable[[str | None, int], tuple[Any, str | None]],
    request: Callable[[int, list[dict], int], ChatRequest],
    reminder: Callable[[str], str],
    max_retries: int = 2,
    retry_failed_requests: bool = True,
) -> list[Asked]:
    """Asks every chat, re-asking those whose answer ``parse`` rejects.

    Args:
        backend: The text backend; each round is one ``generate`` call over the pending chats.
        chats: One message list per item (system/user turns); not modified.
        parse: ``parse(text, i) -> (value, None)`` for a usable answer of item ``i``, ``(None, problem)`` else.
        request: ``request(i, messages, round) -> ChatRequest`` (sets temperature, seed, images per round).
        reminder: ``reminder(problem) -> str``, the user turn after a rejected answer.
        max_retries: Re-asks after a rejected answer.
        retry_failed_requests: Re-ask after a request the backend could not complete (its own retries spent).

    Raises:
        ValueError: ``max_retries`` < 0.
        Exception: whatever ``backend.generate`` raises (the caller decides what a broken backend means).
    """
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    messages = [list(chat) for chat in chats]
    out = [Asked() for _ in chats]
    pending = list(range(len(chats)))
    for round_ in range(max_retries + 1):
        if not pending:
            break
        results = backend.generate([request(i, messages[i], round_) for i in pending])
        still = []
        for i, result in zip(pending, results):
            asked = out[i]
            asked.text, asked.rounds = result.text, round_ + 1
            asked.attempts += result.attempts
            asked.seconds += result.seconds
            if not result.ok:
                asked.errors.append(result.error or "no text")
                asked.transport_failed = True
                if retry_failed_requests:
                    still.append(i)
                continue
            asked.transport_failed = False
            value, problem = parse(result.text, i)
            if problem is None and value is not None:
                asked.value = value
                continue
            asked.errors.append(problem or "unusable answer")
            messages[i] = messages[i] + [
                {"role": "assistant", "content": (result.text or "").strip()[:ECHO_CHARS] or "(no answer)"},
                {"role": "user", "content": reminder(problem or "unusable answer")},
            ]
            still.append(i)
        pending = still
    return out
