"""One scrub for credentials, by value and by pattern, used wherever a backend spec, an error or a setting is
recorded, logged or printed.

By value: the secrets a backend holds (its token, the API key it read). By pattern, for secrets nobody told us
about: URL userinfo (``http://u:KEY@host`` → ``http://u:***@host``), ``Authorization`` / ``Bearer`` / ``Token``
values, ``api_key=…``-style query parameters, and the prefixes of known keys (OpenAI ``sk-…``, Replicate
``r8_…``, Hugging Face ``hf_…``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

MASK = "***"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host and scheme://token@host: the password (or the lone token) goes
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s/@:'\"]*):[^\s/@'\"]+@"), r"\1:" + MASK + "@"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/@:'\"]+@"), r"\1" + MASK + "@"),
    # Authorization: <scheme> <value>, and a bare "Bearer <value>" / "Token <value>" anywhere
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token)\s+)[^\s'\",}]+"), r"\1" + MASK),
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?!bearer|basic|token|\*)[^\s'\",}]+"), r"\1" + MASK),
    (re.compile(r"(?i)\b(bearer\s+)(?!\*)[^\s'\",}]+"), r"\1" + MASK),
    # ?api_key=…, &token=…, x-api-key: …
    (re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access_token|auth)=)[^&\s'\"]+"), r"\1" + MASK),
    (re.compile(r"(?i)(x-api-key[\"']?\s*[:=]\s*[\"']?)[^\s'\",}]+"), r"\1" + MASK),
    # known key prefixes: OpenAI, Replicate, Hugging Face
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), MASK),
    (re.compile(r"\br8_[A-Za-z0-9]{8,}"), MASK),
    (re.compile(r"\bhf_[A-Za-z0-9]{16,}"), MASK),
)

_KEY_PREFIX = re.compile(r"^(?:sk-|r8_|hf_|key-|AIza|ghp_|gho_|github_pat_|xox[abp]-|eyJ)")
_OPAQUE = re.compile(r"^(?=.*[a-z])(?=.*[A-Z])(?=.*[0-9])[A-Za-z0-9_\-.+/=]{20,}$")  # random-looking, mixed case
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def scrub(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with every known secret (``secrets``, longest first) and anything that looks like one masked."""
    if not isinstance(text, str) or not text:
        return text
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def scrub_value(value: Any, secrets: Sequence[str] = ()) -> Any:
    """:func:`scrub` applied to every string inside ``value`` (dicts, lists and tuples rebuilt; keys kept)."""
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, dict):
        return {k: scrub_value(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scrub_value(v, secrets) for v in value)
    return value


def looks_like_key(value: str) -> bool:
    """Whether ``value`` looks like a credential rather than a name (a known prefix, or a long opaque token)."""
    value = value.strip()
    return bool(_KEY_PREFIX.match(value) or _OPAQUE.match(value)) or scrub(value) != value


def check_env_name(value: str, option: str = "--api-key-env") -> str:
    """``value`` when it is an environment variable's name.

    Raises:
        ValueError: it is not a variable name; the message never repeats the value (it may be the key itself).
    """
    if _ENV_NAME.match(value or "") and not looks_like_key(value):
        return value
    what = "looks like a key" if looks_like_key(value or "") else "is not a variable name"
    raise ValueError(f"{option} takes the NAME of an environment variable; the value given {what} (not shown): "
                     f"export OPENAI_API_KEY=... and pass {option} OPENAI_API_KEY")  # fmt: skip


class ScrubFilter(logging.Filter):
    """A logging filter that scrubs every record's message (arguments merged in) before a handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 -- a malformed record is the logging module's business
            return True
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_FILTER = ScrubFilter()


def install_log_scrubber() -> None:
    """Adds :class:`ScrubFilter` to the root logger's handlers and to Python's last-resort handler (what prints
    warnings when nothing configured logging), once."""
    handlers = [*logging.getLogger().handlers, logging.lastResort]
    for handler in handlers:
        if handler is not None and _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


class ScrubbingStream:
    """A text stream that scrubs what is written to it before passing it on (everything else is the stream's own):
    ``python -m sae_lab`` wraps stdout and stderr in it, so no print, warning, progress bar or traceback of any
    command shows a key — whatever library printed it."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(scrub(text))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def scrub_streams() -> None:
    """Wraps ``sys.stdout`` and ``sys.stderr`` in :class:`ScrubbingStream` (once) and installs the log scrubber."""
    import sys

    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, ScrubbingStream):
            setattr(sys, name, ScrubbingStream(stream))
    install_log_scrubber()


__all__ = ["MASK", "ScrubFilter", "ScrubbingStream", "check_env_name", "install_log_scrubber", "looks_like_key",
           "scrub", "scrub_streams", "scrub_value"]  # fmt: skip
