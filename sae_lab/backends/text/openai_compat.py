"""Any OpenAI-compatible chat-completions server (vLLM, llama.cpp server, Ollama, …) over ``httpx``."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from sae_lab.backends.text.base import ChatRequest
from sae_lab.backends.text.remote import (
    RemoteBackend,
    RetryPolicy,
    Secret,
    TransientError,
    image_data_url,
    is_transient_status,
    parse_retry_after,
    scrub,
    transient_from_httpx,
)
from sae_lab.run.secrets import check_env_name


class OpenAICompatBackend(RemoteBackend):
    """``POST {base_url}/chat/completions`` on an OpenAI-compatible server.

    Args:
        model: The model name the server knows (``"model"`` in the request body).
        base_url: Server root including the API prefix, e.g. ``"http://localhost:8000/v1"``.
        api_key_env: Name of the environment variable holding the API key; None for servers without auth.
            The key itself is never taken from configs.
        accepts_images: Whether the model takes images; they are sent as ``image_url`` parts with PNG data URLs.
        concurrency: Requests in flight at once.
        timeout_s: Timeout of each HTTP call in seconds.
        retry: Back-off policy for 429, 5xx, timeouts and connection errors.
        extra_body: Extra JSON fields merged into every request body (e.g. ``{"top_p": 0.9}``).
        transport: An ``httpx`` transport to use instead of the network (tests).
    """

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key_env: str | None = None,
        accepts_images: bool = False,
        concurrency: int = 8,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        extra_body: dict[str, Any] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(concurrency=concurrency, timeout_s=timeout_s, retry=retry)
        if not model:
            raise ValueError("model must be a non-empty string")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.model = model
        self.base_url = base_url.rstrip("/")
        # the name is recorded in every label and explanation: a key inside the URL (http://u:KEY@host) never is
        self.name = scrub(f"openai:{model}@{self.base_url}")
        self.accepts_images = accepts_images
        self.extra_body = dict(extra_body or {})
        self._api_key: Secret | None = None
        headers = {}
        if api_key_env:
            check_env_name(api_key_env)  # the key itself given instead of a name: refused without echoing it
            key = os.environ.get(api_key_env)
            if not key:
                raise ValueError(f"environment variable {api_key_env} (the API key) is not set")
            self._api_key = Secret(key)
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max(concurrency, 10), max_keepalive_connections=concurrency),
            transport=transport,
        )

    def __repr__(self) -> str:
        return (
            f"OpenAICompatBackend(model={self.model!r}, base_url={scrub(self.base_url)!r}, "
            f"concurrency={self.concurrency}, accepts_images={self.accepts_images})"
        )

    def close(self) -> None:
        self._client.close()

    def _secrets(self) -> list[str]:
        password = httpx.URL(self.base_url).password  # a key inside the URL is a secret too
        return [s for s in (self._api_key.get() if self._api_key else None, password) if s]

    def _messages(self, request: ChatRequest) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = [dict(m) for m in request.messages]
        images = self._images_for(request)
        if images:
            last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
            parts: list[dict[str, Any]] = [{"type": "text", "text": messages[last_user]["content"]}]
            parts += [{"type": "image_url", "image_url": {"url": image_data_url(im)}} for im in images]
            messages[last_user] = {"role": "user", "content": parts}
        return messages

    def _complete(self, request: ChatRequest) -> str:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self._messages(request),
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        body.update(self.extra_body)
        try:
            response = self._client.post("/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise transient_from_httpx(exc) or exc from exc
        if is_transient_status(response.status_code):
            raise TransientError(f"HTTP {response.status_code}", parse_retry_after(response.headers))
        if response.status_code >= 400:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
        return _content(response.text)


def _content(raw: str) -> str:
    """The assistant text of a chat-completions response body."""
    try:
        data = json.loads(raw)
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"malformed chat-completions response: {raw[:200]!r}") from exc
    if isinstance(content, list):  # some servers return content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        raise ValueError(f"chat-completions response has no text content: {raw[:200]!r}")
    return content
