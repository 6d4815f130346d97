"""``explain patches`` on a tiny run: records, files, resume, kill-and-resume, bad input, the registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sae_lab.explainers.base import get_explainer
from sae_lab.explainers.patches import NEVER_FIRES, PatchSettings, offline_vocabulary, run_patches
from sae_lab.run import ExplanationStore, RunFiles
from tests.explainers.patches.patch_fixtures import DEAD, FAST, NUM_LATENTS, ScriptedLLM, make_run
from tests.helpers.threads import one_thread  # noqa: F401

LATENTS = "0-4"


@pytest.fixture(scope="module")
def run_dir(classifier_ckpt, tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("patches_run"), classifier_ckpt)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def classes_of(record: dict) -> set[str]:
    return {p["caption"].split(" · ")[0] for p in record["detail"]["patches"]}


def stable(record: dict) -> dict:
    """A record without what differs between two runs of the same settings (time and the cost split)."""
    return {k: v for k, v in record.items() if k != "cost"}


def test_end_to_end_offline_and_resume(run_dir):
    block = run_patches(PatchSettings(run=str(run_dir), latents=LATENTS, **FAST))
    files = RunFiles(run_dir)
    first = lines(files.explanations("patches"))
    assert sorted(r["latent"] for r in first) == list(range(5))
    by = {r["latent"]: r for r in first}
    assert by[DEAD]["text"] is None and by[DEAD]["reason"] == NEVER_FIRES
    assert block["latents"] == 5 and block["explained"] + block["missing"] == 5 and block["explained"] >= 3
    assert block["llm_calls"] == 0 and block["forward_images"] > 0 and block["vlm_images"] > 0
    ok = [r for r in first if r["text"]]
    for r in ok:
        d = r["detail"]
        assert r["method"] == "patches" and r["terms"] == [{"concept": r["text"], "weight": 1.0}]
        assert r["backends"]["llm"] == "offline" and r["backends"]["perception"] == "offline"
        assert r["candidates"][0]["concept"] == r["text"] and 1 <= len(r["candidates"]) <= 3
        scores = [c["score"] for c in r["candidates"]]
        assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
        assert len(d["patches"]) == len(d["maps"]) == len(d["boxes"]) == len(d["rows"]) <= FAST["top_images"]
        for item, m in zip(d["patches"], d["maps"]):
            assert (run_dir / item["image"]).is_file() and (run_dir / m).is_file()
            assert item["image"].startswith(f"patches/{r['latent']}/")
        for x0, y0, x1, y1 in d["boxes"]:
            assert 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 32 and x1 - x0 >= FAST["occluder"]
        assert 1 <= len(d["ablation"]) <= 3 and all({"class", "acc_drop", "n"} <= set(a) for a in d["ablation"])
        drops = [a["acc_drop"] for a in d["ablation"]]
        assert drops == sorted(drops, reverse=True) and all(-1 <= x <= 1 for x in drops)
        assert r["cost"]["forward_images"] > 0 and r["cost"]["vlm_images"] >= 1 and r["cost"]["seconds"] > 0
        # the offline vocabulary: a primitive's name or synonym, of a class one of its top images belongs to
        assert r["text"] in {w for c in classes_of(r) for w in offline_vocabulary(c)}
    gt = [r for r in ok if 1 <= r["latent"] <= 3]
    with_iou = [r["detail"]["gt_iou"] for r in gt if "gt_iou" in r["detail"]]  # when a top image shows a circle
    assert all(0 <= v <= 1 for v in with_iou) and block["gt_iou"]["n"] == len(with_iou)
    assert block["named_strict"]["n"] == len(gt) and block["named_lenient"]["n"] == len(gt)
    assert sum(r["cost"]["forward_images"] for r in ok) == pytest.approx(block["forward_images"], abs=len(ok))

    again = run_patches(PatchSettings(run=str(run_dir), latents=LATENTS, **FAST))
    assert lines(files.explanations("patches")) == first  # nothing redone
    assert again["forward_images"] == 0 and again["explained"] == block["explained"]

    other = run_patches(PatchSettings(run=str(run_dir), latents="1-2", keep=0.9, **FAST))
    assert len(lines(files.explanations("patches"))) == len(first) + 2  # other settings: explained again …
    assert other["forward_images"] == 0  # … from the cached occlusion maps
    recs = ExplanationStore(run_dir, "patches").latest()
    assert all(recs[i].cost.forward_images == 0 and recs[i].settings_hash != by[i]["settings_hash"] for i in (1, 2))
    wider = [(x1 - x0) * (y1 - y0) for i in (1, 2) for x0, y0, x1, y1 in by[i]["detail"]["boxes"]]
    narrower = [(x1 - x0) * (y1 - y0) for i in (1, 2) for x0, y0, x1, y1 in recs[i].detail["boxes"]]
    assert all(a <= b for a, b in zip(narrower, wider))  # keep 0.9 ⊆ keep 0.5
    fresh = run_patches(PatchSettings(run=str(run_dir), latents="1-2", **{**FAST, "stride": 4}))
    assert fresh["forward_images"] > 0  # another stride: new maps


def test_kill_and_resume_gives_the_same_result(classifier_ckpt, tmp_path, monkeypatch):
    import sae_lab.explainers.patches.runner as runner

    whole = make_run(tmp_path / "whole", classifier_ckpt)
    killed = make_run(tmp_path / "killed", classifier_ckpt)
    settings = {"latents": f"1-{NUM_LATENTS - 1}", "chunk": 4, **FAST}
    run_patches(PatchSettings(run=str(whole), **settings))
    expected = {r.latent: r.to_json() for r in ExplanationStore(whole, "patches").latest().values()}

    real, calls = runner.explain_chunk, []

    def dies_on_the_second_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "explain_chunk", dies_on_the_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        run_patches(PatchSettings(run=str(killed), **settings))
    assert len(ExplanationStore(killed, "patches").latest()) == 4  # the first chunk was kept
    monkeypatch.setattr(runner, "explain_chunk", real)
    block = run_patches(PatchSettings(run=str(killed), **settings))
    got = {r.latent: r.to_json() for r in ExplanationStore(killed, "patches").latest().values()}
    assert sorted(got) == sorted(expected) and block["explained"] == len([r for r in got.values() if r["text"]])
    assert {k: stable(v) for k, v in got.items()} == {k: stable(v) for k, v in expected.items()}


def test_a_vocabulary_without_phrases_falls_back_and_is_recorded(run_dir, monkeypatch):
    import sae_lab.backends.text as text

    llm = ScriptedLLM(lambda prompt, r: "Sorry, I can't describe that.")
    monkeypatch.setattr(text, "make_backend", lambda spec, **kw: llm)
    block = run_patches(PatchSettings(run=str(run_dir), latents="1-2", llm="hf:fake-model", max_retries=1, **FAST))
    classes = {m.messages[0]["content"] for m in llm.requests}
    assert len(llm.requests) == 2 * len(classes) and block["llm_calls"] == len(llm.requests)  # asked, asked again
    for r in (ExplanationStore(run_dir, "patches").latest()[i] for i in (1, 2)):
        assert r.backends["llm"] == "hf:fake-model" and r.detail["vocabulary_fallback"]
        assert r.text  # explained with the offline vocabulary


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("occluder", 64, "occluder"),  # the tiny world's images are 32 px
        ("stride", 0, "stride"),
        ("occluder", 0, "occluder"),
        ("keep", 1.5, "keep"),
        ("top_images", 0, "top_images"),
        ("llm", "gpt-9", "llm: unknown LLM backend spec"),
        ("perception", "clip", "perception: unknown perception backend spec"),
        ("prompt", "What is a sketch?", "prompt"),
    ],
)
def test_bad_input_names_the_field(run_dir, field, value, match):
    with pytest.raises(ValueError, match=match):
        run_patches(PatchSettings(run=str(run_dir), latents="1", **{**FAST, field: value}))


def test_registry_entry():
    explainer = get_explainer("patches")
    assert explainer.methods == ("patches",) and explainer.settings is PatchSettings
    a, b = PatchSettings(run="x", latents="1", batch_size=8), PatchSettings(run="y", latents="all", chunk=3)
    assert a.settings_hash() == b.settings_hash() != PatchSettings(stride=4).settings_hash()
