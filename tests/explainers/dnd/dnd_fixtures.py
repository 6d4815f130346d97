"""A tiny run for the DnD tests: a random SAE on the session's test classifier, a hand-written neurons.jsonl,
the perception cache in the test's folder, no hub access.

Not a conftest.py on purpose (see tests/explainers/line/line_fixtures.py); each test module imports what it uses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from sae_lab.run import NeuronRecord, RunFiles
from sae_lab.run.store import write_neurons
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
    from sae_lab.models.classifier_io import load_classifier
    from sae_lab.models.sae import SaeConfig, TopKSAE

    clf = load_classifier(classifier_ckpt)
    torch.manual_seed(0)
    sae = TopKSAE(SaeConfig(d_in=clf.net.channels, num_latents=NUM_LATENTS, k=K), layer=clf.net.layer,
                  classifier=clf.fingerprint, metadata={"classifier_checkpoint": str(classifier_ckpt)})  # fmt: skip
    with torch.no_grad():
        sae.b_enc.fill_(0.5)
        sae.b_enc[DEAD] = -1e4
    sae.save_to_disk(root / "checkpoints" / name / "sae")
    out = root / "reports" / name
    out.mkdir(parents=True)
    gt = {"primitive": "circle", "image_auc": 0.95}
    write_neurons(RunFiles(out).neurons, [NeuronRecord(latent=i, dead=i == DEAD, ground_truth=gt if i < 3 else None)
                                          for i in range(NUM_LATENTS)])  # fmt: skip
    return out


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Captions and embeddings are cached in the test's folder."""
    monkeypatch.setenv("SAE_LAB_PERCEPTION_CACHE", str(tmp_path / "perception-cache"))
