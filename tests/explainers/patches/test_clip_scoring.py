"""A tiny random CLIP through the patch scoring: every distinct patch scored against the vocabulary once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sae_lab.explainers.patches import PatchSettings, rank_phrases, run_patches
from sae_lab.run import ExplanationStore
from tests.backends.perception.tiny_models import save_clip
from tests.explainers.patches.patch_fixtures import FAST, make_run
from tests.helpers.threads import one_thread  # noqa: F401


@pytest.fixture
def tiny_clip(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SAE_LAB_PERCEPTION_CACHE", str(tmp_path / "perception-cache"))
    return save_clip(tmp_path / "tiny-clip")


def test_tiny_clip_scores_the_patches(classifier_ckpt, tmp_path, tiny_clip):
    run_dir = make_run(tmp_path / "run", classifier_ckpt)
    spec = f"hf:{tiny_clip}"
    block = run_patches(PatchSettings(run=str(run_dir), latents="1-3", perception=spec, **FAST))
    records = ExplanationStore(run_dir, "patches").latest()
    assert sorted(records) == [1, 2, 3] and block["explained"] == 3
    patches = {(row, tuple(box)) for r in records.values() for row, box in zip(r.detail["rows"], r.detail["boxes"])}
    assert block["vlm_images"] == len(patches)  # a patch shared by latents is scored once
    for r in records.values():
        assert r.backends["perception"] == spec
        scores = [c["score"] for c in r.candidates]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
        assert r.text == r.candidates[0]["concept"] and len({c["concept"] for c in r.candidates}) == 3


def test_rank_phrases_by_mean_presence_and_skips_identical_evidence():
    presence = np.array([[0.9, 0.9, 0.2, 0.5], [0.7, 0.7, 0.4, 0.5]], dtype=np.float32)
    ranked = rank_phrases(presence, ["circle", "ring", "rays", "dots"])
    assert [c["concept"] for c in ranked] == ["circle", "dots", "rays"]  # "ring" scores exactly like "circle"
    assert ranked[0]["score"] == pytest.approx(0.8, abs=1e-6) and ranked[2]["score"] == pytest.approx(0.3, abs=1e-6)
