"""Fixtures for the LLM backend tests: no hub access, no proxies, and a scriptable HTTP server on loopback."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests.backends.text.llm_fakes import FakeServer, Recorded, Reply

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may come from the Hugging Face hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx honours proxy variables; loopback traffic must not go through one."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("REPLICATE_BASE_URL", raising=False)


@pytest.fixture
def fake_server() -> Iterator[Callable[[Callable[[Recorded], Reply]], FakeServer]]:
    """Factory: ``fake_server(handler)`` starts a server that is shut down after the test."""
    servers: list[FakeServer] = []

    def start(handler: Callable[[Recorded], Reply]) -> FakeServer:
        servers.append(FakeServer(handler))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
