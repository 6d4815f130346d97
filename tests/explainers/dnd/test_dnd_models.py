"""DnD with real model backends, tiny and random: a BLIP captioner, a CLIP for the similarity weight and a Stable
Diffusion pipeline, all built from configs and loaded with ``from_pretrained`` (on CPU; in fp16 where CUDA is)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from sae_lab.explainers.dnd import DndSettings, run_dnd
from sae_lab.run import ExplanationStore, RunFiles, read_json
from tests.backends.perception.tiny_models import save_blip, save_clip
from tests.explainers.dnd.dnd_fixtures import *  # noqa: F403 -- fixtures (autouse ones included)
from tests.explainers.dnd.dnd_fixtures import FAST, make_run
from tests.explainers.dnd.tiny_pipelines import SIZE, save_tiny_sd


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {"blip": save_blip(root / "blip"), "clip": save_clip(root / "clip"), "sd": save_tiny_sd(root / "sd")}


def settings(run: Path, models: dict[str, Path], device: str, dtype: str) -> DndSettings:
    return DndSettings(run=str(run), captioner=f"hf:{models['blip']}", perception=f"hf:{models['clip']}",
                       images=f"diffusers:{models['sd']}", steps=1, guidance=0.0, safety_checker=False,
                       **{**FAST, "device": device, "latents": "1-2", "n_images": 3}, dtype=dtype)  # fmt: skip


def check(run: Path, block: dict) -> None:
    assert block["explained"] == 2 and block["captions"] > 0 and block["images_generated"] > 0
    recs = ExplanationStore(run, "dnd").latest()
    for r in recs.values():
        assert r.backends["captioner"].startswith("hf:") and r.backends["images"].startswith("diffusers:")
        assert r.text and r.candidates[0]["concept"] == r.text
        caps = read_json(run / r.detail["folder"] / "captions.json")
        assert all(isinstance(x["caption"], str) for x in caps)  # BLIP's (random) words
        for row in read_json(run / r.detail["folder"] / "candidates.json")["candidates"]:
            assert row["weight"] == -1 or -1.0 <= row["weight"] <= 1.0  # a CLIP cosine, or none in the top
    pngs = list((RunFiles(run).line_dir / "cache").glob("*.png"))
    assert len(pngs) == block["images_generated"]
    with Image.open(pngs[0]) as im:
        assert im.size == (SIZE, SIZE) and im.mode == "RGB"


def test_tiny_blip_clip_and_stable_diffusion_inside_the_method(models, classifier_ckpt, tmp_path):
    run = make_run(tmp_path, classifier_ckpt)
    check(run, run_dnd(settings(run, models, "cpu", "float32")))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tiny_pipelines_in_half_precision_on_the_gpu(models, classifier_ckpt, tmp_path):
    run = make_run(tmp_path, classifier_ckpt)
    block = run_dnd(settings(run, models, "cuda", "float16"))
    check(run, block)
    rec = next(iter(ExplanationStore(run, "dnd").latest().values()))
    assert "float16" in rec.backends["images"]
