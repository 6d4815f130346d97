"""Fixtures for the LINE tests: a random SAE on the test classifier, no hub access, the LLM tests' helpers.

Not a conftest.py on purpose: test modules elsewhere do ``from conftest import …``, which resolves to whichever
conftest was imported last. Each test module here imports what it uses (autouse fixtures included).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers.threads import one_thread  # noqa: F401  (autouse)

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may come from the Hugging Face hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["DIFFUSERS_OFFLINE"] = "1"

__all__ = ["no_proxies", "one_thread", "sae_dir"]

NUM_LATENTS = 24
K = 4


@pytest.fixture(scope="session")
def sae_dir(classifier_ckpt, tmp_path_factory) -> Path:
    """A random Top-K SAE exported for the session's test classifier (recorded by absolute path)."""
    from sae_lab.models.classifier_io import load_classifier
    from sae_lab.models.sae import SaeConfig, TopKSAE

    clf = load_classifier(classifier_ckpt)
    torch.manual_seed(0)
    sae = TopKSAE(SaeConfig(d_in=clf.net.channels, num_latents=NUM_LATENTS, k=K), layer=clf.net.layer,
                  classifier=clf.fingerprint, metadata={"classifier_checkpoint": str(classifier_ckpt)})  # fmt: skip
    with torch.no_grad():
        sae.b_enc.fill_(0.5)  # most latents fire somewhere, so scores are not all ties
    out = tmp_path_factory.mktemp("sae") / "sae"
    sae.save_to_disk(out)
    return out


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx honours proxy variables; loopback traffic must not go through one."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("REPLICATE_BASE_URL", raising=False)
