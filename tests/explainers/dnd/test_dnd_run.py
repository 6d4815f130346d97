"""``explain dnd`` end to end on a tiny run with the offline backends: records and folders through the run layer,
shared work, resume, kill-and-resume, reproducibility and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from sae_lab.backends.perception import OfflineCaptioner
from sae_lab.explainers.base import get_explainer
from sae_lab.explainers.dnd import DndEngine, DndSettings, run_dnd
from sae_lab.run import ExplanationStore, RunFiles, read_json
from tests.explainers.dnd.dnd_fixtures import *  # noqa: F403 -- fixtures (autouse ones included)
from tests.explainers.dnd.dnd_fixtures import FAST, lines, make_run
from tests.explainers.dnd.test_dnd_summarize import FakeLLM


@pytest.fixture(scope="module")
def run_dir(classifier_ckpt, tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("dnd_run"), classifier_ckpt)


def same_result(a: dict, b: dict) -> None:
    """Two records of one latent agree on everything but the time taken."""
    a, b = dict(a), dict(b)
    for r in (a, b):
        r["cost"] = {k: v for k, v in r["cost"].items() if k != "seconds"}
    assert a == b


def test_offline_end_to_end_shared_work_and_resume(run_dir):
    block = run_dnd(DndSettings(run=str(run_dir), **FAST))
    files = RunFiles(run_dir)
    first = lines(files.explanations("dnd"))
    assert [r["latent"] for r in first] == [1, 2, 3, 4]
    assert block["latents"] == 4 and block["explained"] == 4 and block["llm_calls"] == 0
    assert block["gt_named"]["n"] == 2  # latents 1 and 2 carry a ground-truth primitive
    concepts = set()
    for r in first:
        assert r["method"] == "dnd" and r["text"] == r["candidates"][0]["concept"] and r["terms"][0]["weight"] == 1
        scores = [c["score"] for c in r["candidates"]]
        assert 1 <= len(scores) <= 3 and scores == sorted(scores, reverse=True)
        assert r["backends"]["llm"] == "offline" and r["backends"]["images"].startswith("renderer")
        assert r["cost"]["forward_images"] > 0 and r["cost"]["seconds"] > 0 and r["settings_hash"]
        d = r["detail"]
        assert len(d["summaries"]) == 3 and len(d["seeds"]["shuffle"]) == 3 and d["seeds"]["run"] == 0
        assert d["crops"] and d["images"] and all((run_dir / x["image"]).is_file() for x in d["crops"] + d["images"])
        folder = run_dir / d["folder"]
        table = read_json(folder / "candidates.json")["candidates"]
        concepts |= {c["concept"] for c in table}
        for c in table:  # the final score is (L − position) × weight, the weight −1 without top images
            assert c["score"] == pytest.approx((len(table) - c["position"]) * c["weight"])
            assert c["weight"] == -1 or (0 <= c["weight"] <= 1 and c["top_hits"] > 0)
            assert len(c["activations"]) == len(c["images"]) == FAST["n_images"]
        caps = read_json(folder / "captions.json")
        assert 1 <= len(caps) <= 10 and all(x["caption"].startswith("a sketch of") for x in caps)
        acts = [x["activation"] for x in caps]
        assert acts == sorted(acts, reverse=True) and min(acts) > 0
        assert all(x["box"] is None or x["kind"] == "crop" for x in caps)
    assert read_json(files.method_dir("dnd") / "settings.json")["template"] == DndSettings().template  # for evaluate
    # a concept's images are generated once for every latent that proposed it
    pngs = list((files.line_dir / "cache").glob("*.png"))
    assert block["images_generated"] == len(pngs) == len(concepts) * FAST["n_images"]
    distinct = {x["image"] for r in first for x in read_json(run_dir / r["detail"]["folder"] / "captions.json")}
    assert 0 < block["captions"] <= len(distinct)  # an image shared by latents is captioned once

    again = run_dnd(DndSettings(run=str(run_dir), **FAST))
    assert lines(files.explanations("dnd")) == first  # nothing appended
    assert again["explained"] == 4 and again["images_generated"] == again["forward_images"] == 0

    redo = run_dnd(DndSettings(run=str(run_dir), overwrite=True, **FAST))  # same backends and seed
    assert redo["images_generated"] == 0  # all cached
    latest = ExplanationStore(run_dir, "dnd").latest()
    for r in first:
        same_result({**latest[r["latent"]].to_json(), "cost": r["cost"]}, r)
    assert get_explainer("dnd").methods == ("dnd",) and get_explainer("dnd").settings is DndSettings


def test_kill_and_resume_gives_the_same_result(classifier_ckpt, tmp_path, monkeypatch):
    whole, killed = make_run(tmp_path / "a", classifier_ckpt), make_run(tmp_path / "b", classifier_ckpt)
    opts = {**FAST, "chunk_size": 2}
    run_dnd(DndSettings(run=str(whole), **opts))
    explain, calls = DndEngine.explain, []

    def dies_on_the_second_chunk(self, latents):
        calls.append(list(latents))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return explain(self, latents)

    monkeypatch.setattr(DndEngine, "explain", dies_on_the_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        run_dnd(DndSettings(run=str(killed), **opts))
    assert [r["latent"] for r in lines(RunFiles(killed).explanations("dnd"))] == [1, 2]
    monkeypatch.setattr(DndEngine, "explain", explain)
    block = run_dnd(DndSettings(run=str(killed), **opts))
    assert block["explained"] == 4
    got = lines(RunFiles(killed).explanations("dnd"))
    assert [r["latent"] for r in got] == [1, 2, 3, 4]  # resumed after the finished chunk, nothing twice
    for a, b in zip(lines(RunFiles(whole).explanations("dnd")), got):
        same_result(a, b)


class FlakyCaptioner(OfflineCaptioner):
    """The offline captioner failing on the first image of each call."""

    def _caption(self, images):
        return [None, *super()._caption(images[1:])]


def test_bad_input_few_images_a_failed_caption_and_unusable_llm_answers(classifier_ckpt, tmp_path):
    run = make_run(tmp_path, classifier_ckpt)
    llm = FakeLLM(lambda r: "these images show many different and unrelated things")
    block = run_dnd(DndSettings(run=str(run), **{**FAST, "probe_images": 6, "latents": "0-3", "max_retries": 1}),
                    parts={"llm": llm, "captioner": FlakyCaptioner()})  # fmt: skip
    recs = ExplanationStore(run, "dnd").latest()
    assert recs[0].text is None and "never fires" in recs[0].reason  # the dead latent
    assert block["caption_failures"] == 1 and len(llm.batches) == 2  # one round and one re-ask, all latents together
    assert block["llm_calls"] == 3 * 3 * 2
    notes = [n for i in (1, 2, 3) for n in recs[i].detail["notes"]]
    assert sum("could not be captioned" in n for n in notes) == 1
    assert all(any(n.startswith("only ") and "non-zero activation" in n for n in recs[i].detail["notes"])
               for i in (1, 2, 3))  # fmt: skip
    assert sum("no usable LLM answer" in n for n in notes) == 9  # every summary fell back, each recorded
    assert all(recs[i].text for i in (1, 2, 3))  # the noun-phrase rule still names something
    summaries = read_json(run / recs[1].detail["folder"] / "summaries.json")
    assert all(s["source"] == "fallback" and len(s["errors"]) == 2 for s in summaries)


def test_unknown_backend_specs_and_bad_settings_are_refused(run_dir):
    for field, value in [("captioner", "blip"), ("llm", "gpt:4"), ("perception", "clip"), ("images", "dalle")]:
        with pytest.raises(ValueError, match=f"{field}: unknown backend spec"):
            run_dnd(DndSettings(run=str(run_dir), **{field: value}))
    with pytest.raises(ValueError, match="offline"):
        DndSettings(images="diffusers").check()  # offline perception cannot read generated photos
    for field, value in [("n_top", 0), ("pooling", "mean"), ("template", "no placeholder"), ("split", "dev")]:
        with pytest.raises(ValueError, match=field):
            DndSettings(**{field: value}).check()
    assert DndSettings(device="cuda", chunk_size=3).settings_hash() == DndSettings().settings_hash()
    assert DndSettings(seed=1).settings_hash() != DndSettings().settings_hash()
