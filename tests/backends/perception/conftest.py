"""Fixtures for the perception tests: tiny random VLMs saved once per session, no hub access, no proxies."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.backends.perception.tiny_models import save_blip, save_clip, save_siglip

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may come from the Hugging Face hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    return save_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_siglip(tmp_path_factory) -> Path:
    return save_siglip(tmp_path_factory.mktemp("siglip") / "tiny-siglip")


@pytest.fixture(scope="session")
def tiny_blip(tmp_path_factory) -> Path:
    return save_blip(tmp_path_factory.mktemp("blip") / "tiny-blip")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The default cache points into the test's folder; httpx sees no proxy (loopback traffic)."""
    monkeypatch.setenv("SAE_LAB_PERCEPTION_CACHE", str(tmp_path / "default-cache"))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("REPLICATE_BASE_URL", raising=False)
