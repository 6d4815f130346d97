"""``evaluate`` end to end on a tiny real run: evaluation.json as DESIGN gives it, summary block, --out, resumable and
incremental re-runs, the latent sample, and bad input (no explanations, another SAE, an undrawable concept)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from sae_lab.evaluate import EvaluateSettings, evaluate, evaluation_chart_svg, run_evaluate, sample_latents
from sae_lab.run import RunFiles, load_run, read_neurons
from tests.evaluate.tiny_run import clone_run, make_tiny_run, write_linear, write_method
from tests.helpers.threads import one_thread  # noqa: F401

ROW_KEYS = {"latent", "method", "text", "cosy_auc", "cosy_mad", "simulation_r", "named_strict", "named_lenient"}
METRIC_KEYS = {"cosy_auc", "cosy_mad", "simulation_r", "named_strict", "named_lenient"}


def settings(run_dir, **kw) -> EvaluateSettings:
    base = {"run": str(run_dir), "n_latents": 6, "n_images": 3, "probe_images": 36, "device": "cpu",
            "progress": False}  # fmt: skip
    return EvaluateSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def tiny(classifier_ckpt, tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("evaluate"), classifier_ckpt)


@pytest.fixture(scope="module")
def run_dir(tiny, tmp_path_factory):
    """The tiny run with two methods: ``labels`` (misses latents; one undrawable concept) and a linear ``le-vlm``."""
    run = clone_run(tiny, tmp_path_factory.mktemp("evaluated") / "tiny")
    live = [n.latent for n in read_neurons(run) if not n.dead]
    texts = {k: ("zebra" if i == 0 else ["circle", "sun", "ring", "barn"][i % 4]) for i, k in enumerate(live[:6])}
    texts[live[6]] = None
    write_method(run, "labels", texts)
    write_linear(run, "le-vlm", live)
    return run


def test_evaluation_json_summary_and_page(run_dir):
    block = run_evaluate(settings(run_dir, latents="all"))
    files = RunFiles(run_dir)
    ev = json.loads(files.evaluation.read_text())
    assert {"latents", "seed", "generator", "simulator", "methods", "rows"} <= set(ev)
    live = [n.latent for n in read_neurons(run_dir) if not n.dead]
    assert ev["latents"] == live and ev["seed"] == 0 and ev["simulator"] == "offline"
    assert list(ev["methods"]) == ["labels", "le-vlm", "random", "top-class", "oracle"]
    for v in ev["methods"].values():
        assert METRIC_KEYS <= set(v) and {"missing", "cost"} <= set(v)
        assert all(set(v[m]) == {"mean", "se", "n"} for m in METRIC_KEYS)
        assert set(v["gt"]) == {"cosy_auc", "cosy_mad", "simulation_r"}  # the same on ground-truth latents alone
        assert v["gt"]["simulation_r"]["n"] <= ev["gt_latents"]
    assert ev["methods"]["labels"]["missing"] == len(live) - 6  # one "no explanation" and those never explained
    assert ev["methods"]["le-vlm"]["missing"] == 0 and ev["methods"]["random"]["missing"] == 0
    assert all(ROW_KEYS <= set(r) for r in ev["rows"])
    assert len(ev["rows"]) == sum(len(live) - v["missing"] for v in ev["methods"].values())
    gen = ev["generator"]
    assert gen["spec"] == "renderer" and gen["n_images"] == 3 and gen["seeds"] == [2**31, 2**31 + 3]
    summary = json.loads(files.summary.read_text())["evaluation"]
    assert summary == json.loads(json.dumps(block))
    assert summary["latents"] == len(live) and set(summary["methods"]["oracle"]) == {
        "cosy_auc", "simulation_r", "named_strict", "named_lenient"}  # fmt: skip
    ET.fromstring(evaluation_chart_svg(ev))  # well-formed SVG


def test_an_undrawable_concept_is_recorded_not_fatal(run_dir):
    ev = evaluate(settings(run_dir, latents="all"))
    zebra = [r for r in ev["rows"] if r["text"] == "zebra"]
    assert len(zebra) == 1 and zebra[0]["drawable"] is False
    assert zebra[0]["cosy_auc"] is None and zebra[0]["cosy_mad"] is None
    assert zebra[0]["simulation_r"] == 0.0  # the simulator sees no zebra anywhere: the prediction is flat
    assert ev["methods"]["labels"]["undrawable"] == 1
    drawn = [r for r in ev["rows"] if r["method"] == "oracle"]
    assert drawn and all(r["drawable"] and r["cosy_auc"] is not None for r in drawn)


def test_rerun_scores_only_what_is_new(run_dir):
    first = evaluate(settings(run_dir, latents="all"))
    assert first["work"]["rows_scored"] == 0 and first["work"]["images_generated"] == 0  # all cached
    live = first["latents"]
    write_method(run_dir, "dnd", {k: "dots and spiral" for k in live[:2]})  # a concept no other row asks for
    again = evaluate(settings(run_dir, latents="all"))
    assert again["work"]["rows_scored"] == 2 and again["work"]["rows_cached"] == len(first["rows"])
    assert again["work"]["images_generated"] == 3  # that concept's images only
    new = {(r["method"], r["latent"]) for r in again["rows"]} - {(r["method"], r["latent"]) for r in first["rows"]}
    assert new == {("dnd", k) for k in live[:2]}
    same = {(r["method"], r["latent"]): r for r in again["rows"]}
    assert all(same[(r["method"], r["latent"])] == r for r in first["rows"])


def test_out_writes_elsewhere_and_leaves_the_report_alone(run_dir, tmp_path):
    files = RunFiles(run_dir)
    before = {p: p.read_bytes() for p in (files.evaluation, files.summary)}
    out = tmp_path / "ev-seed1.json"
    run_evaluate(settings(run_dir, n_latents=3, latents_seed=1, out=str(out)))
    assert {p: p.read_bytes() for p in before} == before
    ev = json.loads(out.read_text())
    assert ev["seed"] == 1 and len(ev["latents"]) == 3


def test_the_sample_is_seeded_live_and_independent_of_explanations(run_dir):
    neurons = read_neurons(run_dir)
    live = {n.latent for n in neurons if not n.dead}
    a, b = sample_latents(neurons, 5, 0), sample_latents(neurons, 5, 1)
    assert a == sample_latents(neurons, 5, 0) and a != b and set(a) <= live and len(a) == 5
    assert sample_latents(neurons, 5, 0, latents="1,3") == [1, 3]
    with pytest.raises(ValueError, match="not in the report"):
        sample_latents(neurons, 5, 0, latents="999")


def test_a_run_without_explanations_says_what_to_run_first(tiny, tmp_path):
    run = clone_run(tiny, tmp_path / "bare")
    with pytest.raises(FileNotFoundError, match=r"explain labels --run .*bare"):
        evaluate(settings(run))


def test_explanations_of_another_sae_are_left_out_or_refused_naming_both(tiny, tmp_path, caplog):
    run = clone_run(tiny, tmp_path / "other")
    ours = load_run(run).sae_id
    write_method(run, "labels", {0: "circle"}, detail={"sae_id": ours})
    write_method(run, "line", {0: "circle"}, backends={"sae": "deadbeef-0123"})  # where LINE records it
    # The report records its SAE: the run layer leaves the other SAE's records out (missing), with a warning.
    with caplog.at_level("WARNING"):
        ev = evaluate(settings(run, latents="0"))
    assert ev["methods"]["line"]["missing"] == 1 and ev["methods"]["labels"]["missing"] == 0
    assert "line.jsonl: 1 of 1 explanations were made for another SAE (deadbeef-0123" in caplog.text
    # A report from before identities: evaluate itself refuses them.
    report = json.loads(RunFiles(run).report.read_text())
    report.pop("identity")
    RunFiles(run).report.write_text(json.dumps(report))
    with pytest.raises(ValueError, match=r"line\.jsonl.*deadbeef-0123.*" + ours):
        evaluate(settings(run))


def test_held_out_template_and_seeds_are_checked_against_the_explainers_records(tiny, tmp_path):
    line_template = "a simple black-and-white line drawing of {concept}"
    run = clone_run(tiny, tmp_path / "line")
    write_method(run, "line", {0: "circle"}, backends={"images": "renderer"},
                 detail={"template": line_template, "seed": 0, "n_images": 3})  # fmt: skip
    ev = evaluate(settings(run, latents="0"))
    assert ev["generator"]["template"] != line_template and ev["generator"]["seeds"][0] >= 2**31
    with pytest.raises(ValueError, match=r"explanations/line\.jsonl"):
        evaluate(settings(run, latents="0", template=line_template))
    with pytest.raises(ValueError, match="seed"):
        evaluate(settings(run, latents="0", seed_start=100))
