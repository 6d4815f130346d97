"""Text generation on Replicate through the official ``replicate`` client (1.x)."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import replicate
from replicate.exceptions import ModelError, ReplicateError

from sae_lab.backends.text.base import ChatRequest
from sae_lab.backends.text.remote import (
    RemoteBackend,
    RetryPolicy,
    Secret,
    TransientError,
    image_data_url,
    is_transient_status,
    parse_retry_after,
    transient_from_httpx,
)

DEFAULT_MODEL = "meta/meta-llama-3-8b-instruct"
TOKEN_ENV = "REPLICATE_API_TOKEN"
_TERMINAL = ("succeeded", "failed", "canceled")


class ReplicateBackend(RemoteBackend):
    """A Replicate language model; the API token comes from ``REPLICATE_API_TOKEN`` only.

    Each attempt creates a prediction with ``Prefer: wait`` (the server holds the POST up to the timeout, at most
    60 s) and polls until it is done or ``timeout_s`` has passed since the attempt began (then it is cancelled
    and retried). The client does not retry the creating POST, so this class retries it: HTTP 429 (honouring
    ``Retry-After``), 5xx, timeouts and connection errors. (The client itself retries the polling GETs on 429, 503
    and 504.) Statuses are polled every ``poll_interval_s``; a failing poll is simply polled again.

    The conversation is flattened into Replicate's usual inputs: system turns become ``system_prompt``, a single
    user turn becomes ``prompt``, longer conversations a ``role: content`` transcript ending in ``assistant:``.

    Args:
        model: ``owner/name`` (the model's latest version) or ``owner/name:version``.
        base_url: API root; None for Replicate's (or ``REPLICATE_BASE_URL``).
        accepts_images: Whether the model takes images; they go in ``input[image_key]`` as PNG data URLs
            (a string for one image, a list for several).
        image_key: Input field for images.
        max_tokens_key: Input field for the generation length.
        extra_input: Extra model inputs merged into every request (e.g. ``{"top_p": 0.9}``).
        concurrency: Predictions in flight at once.
        timeout_s: Per-attempt timeout in seconds.
        poll_interval_s: Seconds between status polls.
        retry: Back-off policy.
        transport: An ``httpx`` transport to use instead of the network (tests).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        base_url: str | None = None,
        accepts_images: bool = False,
        image_key: str = "image",
        max_tokens_key: str = "max_tokens",
        extra_input: dict[str, Any] | None = None,
        concurrency: int = 8,
        timeout_s: float = 120.0,
        poll_interval_s: float = 0.5,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(concurrency=concurrency, timeout_s=timeout_s, retry=retry)
        self.owner, self.model_name, self.version = _parse_ref(model)
        self.model = model
        self.name = f"replicate:{model}"
        self.accepts_images = accepts_images
        self.image_key = image_key
        self.max_tokens_key = max_tokens_key
        self.extra_input = dict(extra_input or {})
        token = os.environ.get(TOKEN_ENV)
        if not token:
            raise ValueError(f"environment variable {TOKEN_ENV} is not set")
        self._token = Secret(token)
        self._local = threading.local()  # Retry-After of the last response on this worker thread
        # One transport shared by every httpx client the replicate client builds lazily (possibly one per worker
        # thread on first use): builds the TLS context once and keeps one connection pool.
        if transport is None:
            limits = httpx.Limits(max_connections=max(concurrency, 10), max_keepalive_connections=concurrency)
            transport = httpx.HTTPTransport(limits=limits)
        self._client = replicate.Client(
            api_token=token,
            base_url=base_url,
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            event_hooks={"response": [self._remember_retry_after]},
        )
        self._client.poll_interval = poll_interval_s

    def __repr__(self) -> str:
        return (
            f"ReplicateBackend(model={self.model!r}, concurrency={self.concurrency}, "
            f"timeout_s={self.timeout_s}, accepts_images={self.accepts_images})"
        )

    def _secrets(self) -> list[str]:
        return [self._token.get()]

    def _remember_retry_after(self, response: httpx.Response) -> None:
        self._local.retry_after = parse_retry_after(response.headers)

    def model_input(self, request: ChatRequest) -> dict[str, Any]:
        """The prediction input for one request."""
        system = "\n\n".join(m["content"] for m in request.messages if m["role"] == "system")
        turns = [m for m in request.messages if m["role"] != "system"]
        if len(turns) == 1 and turns[0]["role"] == "user":
            prompt = turns[0]["content"]
        else:
            prompt = "\n".join(f"{m['role']}: {m['content']}" for m in turns) + "\nassistant:"
        data: dict[str, Any] = {"prompt": prompt, self.max_tokens_key: request.max_new_tokens}
        data["temperature"] = request.temperature
        if system:
            data["system_prompt"] = system
        if request.seed is not None:
            data["seed"] = request.seed
        images = [image_data_url(im) for im in self._images_for(request)]
        if images:
            data[self.image_key] = images[0] if len(images) == 1 else images
        data.update(self.extra_input)
        return data

    def _complete(self, request: ChatRequest) -> str:
        deadline = time.monotonic() + self.timeout_s
        wait = min(max(math.ceil(self.timeout_s), 1), 60)  # Prefer: wait=N holds the POST up to N seconds
        data = self.model_input(request)
        self._local.retry_after = None
        with _translated(self._local):
            if self.version:
                prediction = self._client.predictions.create(version=self.version, input=data, wait=wait)
            else:
                prediction = self._client.models.predictions.create(
                    model=(self.owner, self.model_name), input=data, wait=wait
                )
        while prediction.status not in _TERMINAL:
            if time.monotonic() >= deadline:
                _cancel(prediction)
                raise TransientError(f"timeout: prediction {prediction.id} not done after {self.timeout_s:g}s")
            time.sleep(self._client.poll_interval)
            try:
                with _translated(self._local):
                    prediction.reload()
            except TransientError:
                continue  # a failed poll is retried by the next poll, until the deadline
        if prediction.status == "failed":
            raise ModelError(prediction)
        if prediction.status == "canceled":
            raise RuntimeError(f"prediction {prediction.id} was canceled")
        return _join_output(prediction.output)


@contextmanager
def _translated(local: threading.local) -> Iterator[None]:
    """Turn retryable client errors into :class:`TransientError` and the others into plain, readable errors."""
    try:
        yield
    except ReplicateError as exc:
        if exc.status is not None and is_transient_status(exc.status):
            raise TransientError(f"HTTP {exc.status}", getattr(local, "retry_after", None)) from exc
        raise RuntimeError(f"HTTP {exc.status}: {exc.title or exc.detail or 'error'}") from exc
    except httpx.HTTPError as exc:
        raise transient_from_httpx(exc) or exc from exc


def _cancel(prediction: Any) -> None:
    try:
        prediction.cancel()
    except Exception:  # noqa: BLE001 -- best effort; the attempt has failed anyway
        pass


def _join_output(output: Any) -> str:
    """Language models on Replicate return a list (or iterator) of string chunks, some a single string."""
    if isinstance(output, str):
        return output
    if output is None:
        raise ValueError("prediction succeeded without output")
    chunks = list(output)
    if not all(isinstance(c, str) for c in chunks):
        raise ValueError(f"expected text output, got {type(chunks[0]).__name__ if chunks else 'nothing'}")
    return "".join(chunks)


def _parse_ref(ref: str) -> tuple[str, str, str | None]:
    """``owner/name[:version]`` → (owner, name, version or None)."""
    name_part, _, version = ref.partition(":")
    owner, slash, name = name_part.partition("/")
    if not owner or not slash or not name or "/" in name or (_ and not version):
        raise ValueError(f"Replicate model must look like 'owner/name' or 'owner/name:version', got {ref!r}")
    return owner, name, version or None
