"""Tiny runs and a scriptable LLM for the patches tests (not a conftest.py: see tests/explainers/line)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from sae_lab.backends.text.base import ChatRequest, GenerationResult, TextBackend
from sae_lab.run import NeuronRecord, RunFiles
from sae_lab.run.store import write_neurons

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may come from the Hugging Face hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"

NUM_LATENTS = 12
K = 4
DEAD = 0
RUN = "tiny"
FAST = {"split": "train", "n_images": 100, "device": "cpu", "batch_size": 64, "top_images": 3, "occluder": 16,
        "stride": 8}  # fmt: skip


def make_run(root: Path, classifier_ckpt: Path) -> Path:
    """``root/checkpoints/tiny/sae`` (a random SAE on the test classifier, latent 0 never firing) and
    ``root/reports/tiny/neurons.jsonl`` (latents 1–3 matched to circle at AUC 0.95); returns the report folder."""
    from sae_lab.models.classifier_io import load_classifier
    from sae_lab.models.sae import SaeConfig, TopKSAE

    clf = load_classifier(classifier_ckpt)
    torch.manual_seed(0)
    sae = TopKSAE(SaeConfig(d_in=clf.net.channels, num_latents=NUM_LATENTS, k=K), layer=clf.net.layer,
                  classifier=clf.fingerprint, metadata={"classifier_checkpoint": str(classifier_ckpt)})  # fmt: skip
    with torch.no_grad():
        sae.b_enc.fill_(0.5)
        sae.b_enc[DEAD] = -1e4
    sae.save_to_disk(root / "checkpoints" / RUN / "sae")
    out = root / "reports" / RUN
    out.mkdir(parents=True)
    gt = {"primitive": "circle", "image_auc": 0.95}
    write_neurons(RunFiles(out).neurons, [NeuronRecord(latent=i, dead=i == DEAD, ground_truth=gt if i < 4 else None)
                                          for i in range(NUM_LATENTS)])  # fmt: skip
    return out


class ScriptedLLM(TextBackend):
    """Answers each request with ``answer(prompt_text, round)``; counts requests."""

    name = "scripted"

    def __init__(self, answer: Callable[[str, int], str]) -> None:
        self.answer = answer
        self.requests: list[ChatRequest] = []

    def generate(self, requests: Sequence[ChatRequest]) -> list[GenerationResult]:
        self.requests.extend(requests)
        out = []
        for r in requests:
            rounds = sum(m["role"] == "assistant" for m in r.messages)
            out.append(GenerationResult(self.answer(r.messages[0]["content"], rounds)))
        return out
