"""Shared machinery of the HTTP backends: concurrency, retries with back-off, secret scrubbing, image data URLs."""

from __future__ import annotations

import base64
import email.utils
import io
import logging
import random
import time
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import httpx

from sae_lab.backends.text.base import ChatRequest, GenerationResult, TextBackend
from sae_lab.run.secrets import scrub  # noqa: F401 -- the one scrub (by value and by pattern), re-exported

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)


@dataclass
class RetryPolicy:
    """Exponential back-off with jitter for transient failures (HTTP 429 and 5xx, timeouts, connection errors).

    Attributes:
        max_retries: Retries after the first attempt; 0 disables retrying.
        backoff_s: Delay before the first retry; doubles on every further retry.
        max_backoff_s: Cap on any single delay, a server's ``Retry-After`` included.
        jitter: Relative jitter; the delay is scaled by a uniform factor in ``[1 - jitter, 1 + jitter]``.
    """

    max_retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff_s < 0 or self.max_backoff_s < 0 or not 0 <= self.jitter <= 1:
            raise ValueError(f"invalid retry policy {self}")

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based); a server's ``Retry-After`` wins when given."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_backoff_s)
        base = min(self.backoff_s * 2 ** (retry - 1), self.max_backoff_s)
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)


class TransientError(Exception):
    """A failure worth retrying; ``retry_after`` is the server's hint in seconds, if it gave one."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Secret:
    """Holds a credential; its repr and str never show the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), or None when absent or unreadable."""
    value = (headers.get("Retry-After") or headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


def is_transient_status(status: int) -> bool:
    return status == 429 or 500 <= status < 600


def transient_from_httpx(exc: httpx.HTTPError) -> TransientError | None:
    """Timeouts and connection failures are transient; other httpx errors are not."""
    if isinstance(exc, httpx.TimeoutException):
        return TransientError(f"timeout ({type(exc).__name__})")
    if isinstance(exc, httpx.TransportError):
        return TransientError(f"connection error ({type(exc).__name__})")
    return None


def image_data_url(image: Image.Image) -> str:
    """A ``data:image/png;base64,…`` URL for a PIL image."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class RemoteBackend(TextBackend):
    """A backend that sends each request on its own, ``concurrency`` at a time, retrying transient failures.

    Subclasses implement :meth:`_complete` for one request and raise :class:`TransientError` for failures worth
    retrying; any other exception fails that request at once. Error strings are scrubbed of :meth:`_secrets`.

    Args:
        concurrency: Requests in flight at once.
        timeout_s: Per-call timeout in seconds (each HTTP call; Replicate: each prediction attempt).
        retry: Back-off policy; ``RetryPolicy()`` when None.
    """

    def __init__(self, *, concurrency: int = 8, timeout_s: float = 120.0, retry: RetryPolicy | None = None) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.retry = retry if retry is not None else RetryPolicy()

    @abstractmethod
    def _complete(self, request: ChatRequest) -> str:
        """Send one request once and return its text."""

    def _secrets(self) -> list[str]:
        return []

    def generate(self, requests: Sequence[ChatRequest]) -> list[GenerationResult]:
        if not requests:
            return []
        if len(requests) == 1 or self.concurrency == 1:
            return [self._run(i, r) for i, r in enumerate(requests)]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests)), thread_name_prefix="llm") as pool:
            return list(pool.map(self._run, range(len(requests)), requests))

    def _run(self, index: int, request: ChatRequest) -> GenerationResult:
        start = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            try:
                text = self._complete(request)
                return GenerationResult(text=text, attempts=attempts, seconds=time.monotonic() - start)
            except TransientError as exc:
                reason = scrub(str(exc), self._secrets())
                if attempts > self.retry.max_retries:
                    error = f"{reason} (gave up after {attempts} attempts)"
                    logger.warning("%s: request %d failed: %s", self.name, index, error)
                    return GenerationResult(None, error, attempts, time.monotonic() - start)
                wait = self.retry.delay(attempts, exc.retry_after)
                logger.debug(
                    "%s: request %d attempt %d: %s; retrying in %.2fs", self.name, index, attempts, reason, wait
                )
                time.sleep(wait)
            except Exception as exc:  # noqa: BLE001 -- one failing request must not fail the batch
                error = scrub(f"{type(exc).__name__}: {exc}", self._secrets())
                logger.warning("%s: request %d failed: %s", self.name, index, error)
                return GenerationResult(None, error, attempts, time.monotonic() - start)
