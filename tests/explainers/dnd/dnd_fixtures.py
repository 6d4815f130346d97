"""A tiny run for the DnD tests: a random SAE on the session's test classifier, a hand-written neurons.jsonl,
the perception cache in the test's folder, no hub access.

Not a conftest.py on purpose (see tests/explainers/line/line_fixtures.py); each test module imports what it uses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers.runs import make_tiny_run
from tests.helpers.threads import one_thread  # noqa: F401  (autouse)

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may come from the Hugging Face hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["DIFFUSERS_OFFLINE"] = "1"

__all__ = ["FAST", "LATENTS", "isolated", "lines", "make_run", "one_thread"]

NUM_LATENTS = 12
K = 4
DEAD = 0
LATENTS = "1-4"
FAST = {"split": "test", "probe_images": 36, "device": "cpu", "batch_size": 64, "n_images": 4, "n_summaries": 3,
        "latents": LATENTS}  # fmt: skip
"""Small but complete: 36 probe images, 10 top images per latent, 3 summaries, 4 images per candidate."""


def make_run(root: Path, classifier_ckpt: Path, name: str = "tiny") -> Path:
    """``root/checkpoints/<name>/sae`` (a random SAE, latent 0 never firing) and ``root/reports/<name>``."""
    return make_tiny_run(root, classifier_ckpt, name=name, num_latents=NUM_LATENTS, k=K, dead=DEAD, matched=3)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Captions and embeddings are cached in the test's folder."""
    monkeypatch.setenv("SAE_LAB_PERCEPTION_CACHE", str(tmp_path / "perception-cache"))
