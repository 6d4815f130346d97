"""Tiny runs and a scriptable LLM for the patches tests (not a conftest.py: see tests/explainers/line)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from sae_lab.backends.text.base import ChatRequest, GenerationResult, TextBackend
from tests.helpers.runs import make_tiny_run

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
    return make_tiny_run(root, classifier_ckpt, name=RUN, num_latents=NUM_LATENTS, k=K, dead=DEAD, matched=4)


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
