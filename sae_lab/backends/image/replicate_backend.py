"""Replicate text-to-image models as an image backend, through the official ``replicate`` client."""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from PIL import Image

from sae_lab.backends.image.base import ImageBackend, check_lengths

if TYPE_CHECKING:
    import httpx

    from sae_lab.backends.text.remote import RetryPolicy

logger = logging.getLogger(__name__)

DEFAULT_REPLICATE_MODEL = "black-forest-labs/flux-schnell"


class ReplicateImageBackend(ImageBackend):
    """A Replicate text-to-image model through the official ``replicate`` client; token from ``REPLICATE_API_TOKEN``.

    Each image is one prediction (``concurrency`` in flight), created with ``Prefer: wait`` and polled until done
    or ``timeout_s``; HTTP 429/5xx, timeouts and connection errors are retried with back-off. The output (a URL,
    a data URL or a list of them) is fetched through the client's own ``httpx`` client.

    Args:
        model: ``owner/name`` or ``owner/name:version``.
        base_url: API root; None for Replicate's (or ``REPLICATE_BASE_URL``).
        steps: Sent as ``steps_key`` when given.
        guidance: Sent as ``guidance_key`` when given.
        steps_key: The model's input field for the number of steps.
        guidance_key: The model's input field for the guidance scale.
        extra_input: Extra model inputs for every prediction (e.g. ``{"aspect_ratio": "1:1"}``).
        concurrency: Predictions in flight at once.
        timeout_s: Per-attempt timeout in seconds.
        poll_interval_s: Seconds between status polls.
        retry: Back-off policy (``sae_lab.backends.text.remote.RetryPolicy``).
        transport: An ``httpx`` transport to use instead of the network (tests).
    """

    def __init__(
        self,
        model: str = DEFAULT_REPLICATE_MODEL,
        *,
        base_url: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        steps_key: str = "num_inference_steps",
        guidance_key: str = "guidance_scale",
        extra_input: dict[str, Any] | None = None,
        concurrency: int = 8,
        timeout_s: float = 300.0,
        poll_interval_s: float = 0.5,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        import httpx
        import replicate

        from sae_lab.backends.text.remote import RetryPolicy, Secret
        from sae_lab.backends.text.replicate_backend import TOKEN_ENV, _parse_ref

        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.owner, self.model_name, self.version = _parse_ref(model)
        self.model, self.name = model, f"replicate:{model}"
        self.steps, self.guidance, self.steps_key, self.guidance_key = steps, guidance, steps_key, guidance_key
        self.extra_input = dict(extra_input or {})
        self.concurrency, self.timeout_s = concurrency, timeout_s
        self.retry = retry if retry is not None else RetryPolicy()
        token = os.environ.get(TOKEN_ENV)
        if not token:
            raise ValueError(f"environment variable {TOKEN_ENV} is not set")
        self._token = Secret(token)
        self._client = replicate.Client(
            api_token=token, base_url=base_url, timeout=httpx.Timeout(timeout_s), transport=transport
        )
        self._client.poll_interval = poll_interval_s
        self.last_error: str | None = None
        """Why the last failed image failed (secrets scrubbed), for a stage that must say why nothing came back."""

    @property
    def identity(self) -> str:
        extra = json.dumps(self.extra_input, sort_keys=True)
        return f"{self.name}(steps={self.steps},guidance={self.guidance},input={extra})"

    def model_input(self, prompt: str, seed: int) -> dict[str, Any]:
        data: dict[str, Any] = {"prompt": prompt, "seed": int(seed), "num_outputs": 1, "output_format": "png"}
        if self.steps is not None:
            data[self.steps_key] = self.steps
        if self.guidance is not None:
            data[self.guidance_key] = self.guidance
        data.update(self.extra_input)
        return data

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image | None]:
        check_lengths(prompts, seeds)
        if len(prompts) <= 1 or self.concurrency == 1:
            return [self._one(p, s) for p, s in zip(prompts, seeds)]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts)), thread_name_prefix="t2i") as pool:
            return list(pool.map(self._one, prompts, seeds))

    def _one(self, prompt: str, seed: int) -> Image.Image | None:
        from sae_lab.backends.text.remote import TransientError, scrub

        attempts = 0
        while True:
            attempts += 1
            try:
                return self._predict(prompt, seed)
            except TransientError as exc:
                if attempts > self.retry.max_retries:
                    self.last_error = scrub(f"{exc} (gave up after {attempts} attempts)", [self._token.get()])
                    logger.warning("%s: %r failed: %s", self.name, prompt, self.last_error)
                    return None
                time.sleep(self.retry.delay(attempts, exc.retry_after))
            except Exception as exc:  # noqa: BLE001 -- one failed image must not fail the batch
                self.last_error = scrub(" ".join(f"{type(exc).__name__}: {exc}".split()), [self._token.get()])[:300]
                logger.warning("%s: %r failed: %s", self.name, prompt, self.last_error)
                return None

    def _predict(self, prompt: str, seed: int) -> Image.Image:
        import threading

        from replicate.exceptions import ModelError
        from replicate.helpers import FileOutput

        from sae_lab.backends.text.remote import TransientError
        from sae_lab.backends.text.replicate_backend import _cancel, _translated

        local = threading.local()
        deadline = time.monotonic() + self.timeout_s
        wait = min(max(int(self.timeout_s), 1), 60)
        data = self.model_input(prompt, seed)
        with _translated(local):
            if self.version:
                prediction = self._client.predictions.create(version=self.version, input=data, wait=wait)
            else:
                prediction = self._client.models.predictions.create(
                    model=(self.owner, self.model_name), input=data, wait=wait
                )
        while prediction.status not in ("succeeded", "failed", "canceled"):
            if time.monotonic() >= deadline:
                _cancel(prediction)
                raise TransientError(f"timeout: prediction {prediction.id} not done after {self.timeout_s:g}s")
            time.sleep(self._client.poll_interval)
            try:
                with _translated(local):
                    prediction.reload()
            except TransientError:
                continue
        if prediction.status == "failed":
            raise ModelError(prediction)
        if prediction.status == "canceled":
            raise RuntimeError(f"prediction {prediction.id} was canceled")
        output = prediction.output
        if isinstance(output, (list, tuple)):
            if not output:
                raise ValueError("prediction succeeded without output")
            output = output[0]
        if not isinstance(output, str):
            raise ValueError(f"expected an image URL, got {type(output).__name__}")
        with _translated(local):
            data_bytes = FileOutput(output, self._client).read()
        image = Image.open(io.BytesIO(data_bytes))
        image.load()
        return image

    def close(self) -> None:
        self._client._client.close()
