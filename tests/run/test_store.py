"""The run layer: records round-trip, old files still read, appends survive a kill, one error policy."""

from __future__ import annotations

import json

import pytest

from sae_lab.explainers.base import choose_latents, parse_latents, sample_live
from sae_lab.run import (
    Cost,
    ExplanationRecord,
    ExplanationStore,
    JsonlAppender,
    NeuronRecord,
    RunFiles,
    Term,
    explanation_methods,
    linear_text,
    preferred_texts,
    read_explanations,
    read_neurons,
)
from sae_lab.run.io import read_jsonl, write_json, write_jsonl

V1 = {"id": 3, "frequency": 0.1, "image_frequency": 0.4, "dead": False, "top_classes": [{"class": "sun"}],
      "ground_truth": {"primitive": "spokes", "image_auc": 0.97}, "some_future_key": 1}  # fmt: skip


def test_a_version_1_report_is_still_read(tmp_path):
    write_jsonl(tmp_path / "neurons.jsonl", [V1, {**V1, "id": 1, "dead": True}])
    neurons = read_neurons(tmp_path)
    assert [n.latent for n in neurons] == [1, 3] and [n.schema for n in neurons] == [1, 1]
    n = neurons[1]
    assert (n.top_class, n.gt_primitive, n.gt_auc, n.live) == ("sun", "spokes", 0.97, True)
    again = NeuronRecord.from_json(n.to_json())
    assert again == n and "id" not in n.to_json() and n.to_json()["latent"] == 3


def test_a_missing_or_empty_report_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="neurons.jsonl not found: run `python -m sae_lab report"):
        read_neurons(tmp_path)
    (tmp_path / "neurons.jsonl").write_text("not json\n\n")
    with pytest.raises(ValueError, match="holds no neuron records"):
        read_neurons(tmp_path)


def test_explanation_records_round_trip_and_linear_text():
    rec = ExplanationRecord(7, "le-vlm", "x", [Term("circle", 0.62), Term("spokes", -0.21)], bias=0.05,
                            cost=Cost(vlm_images=3, seconds=0.5), detail={"select_r": 0.8})  # fmt: skip
    assert ExplanationRecord.from_json(json.loads(json.dumps(rec.to_json()))) == rec
    assert rec.main_concept == "circle" and rec.concepts == ["circle", "spokes"]
    assert linear_text(rec.terms, rec.bias) == "0.62*circle - 0.21*spokes + 0.05"
    assert linear_text([Term("a", 4.236), Term("b", 2.74)], -0.333) == "4.24*a + 2.74*b - 0.33"
    with pytest.raises(ValueError, match="missing text"):
        ExplanationRecord.from_json({"latent": 1, "method": "m"})
    with pytest.raises(ValueError, match="latent must be an integer"):
        ExplanationRecord.from_json({"latent": "1", "method": "m", "text": "t"})


def test_the_store_appends_resumes_and_compacts(tmp_path):
    store = ExplanationStore(tmp_path, "dnd")
    store.append([ExplanationRecord.single(1, "dnd", "circle", settings_hash="a"),
                  ExplanationRecord.single(2, "dnd", None, reason="never fires", settings_hash="a")])  # fmt: skip
    store.append(ExplanationRecord.single(1, "dnd", "ring", settings_hash="b"))  # a later run, other settings
    store.close()
    assert store.done("a") == {2} and store.done("b") == {1} and store.done() == {1, 2}
    store.append(
        ExplanationRecord.single(3, "dnd", None, reason="HTTP 401", settings_hash="b", detail={"failed": True})
    )
    assert store.done("b") == {1} and not store.latest()[3].ok  # failed calls are tried again
    assert store.latest()[1].text == "ring" and not store.latest()[2].ok
    with pytest.raises(ValueError, match="does not belong"):
        store.append(ExplanationRecord.single(3, "line", "x"))
    assert store.compact() == 3 and len(read_jsonl(store.path)) == 3
    assert explanation_methods(tmp_path) == ["dnd"] and set(read_explanations(tmp_path)["dnd"]) == {1, 2, 3}
    with pytest.raises(ValueError, match="bad explanation method"):
        RunFiles(tmp_path).explanations("../escape")


def test_a_partial_last_line_is_cut_and_a_whole_one_completed(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"latent": 1}\n{"latent": 2, "te')  # killed mid-append
    appender = JsonlAppender(path)
    assert appender.repaired_bytes > 0
    appender.append({"latent": 3})
    appender.close()
    assert [r["latent"] for r in read_jsonl(path)] == [1, 3]
    path.write_text('{"latent": 1}\n{"latent": 2}')  # killed after the object, before its newline
    with JsonlAppender(path) as appender:
        assert appender.repaired_bytes == 0
        appender.append({"latent": 4})
    assert [r["latent"] for r in read_jsonl(path)] == [1, 2, 4]


def test_unreadable_lines_are_skipped_with_a_warning_naming_the_line(tmp_path, caplog):
    path = tmp_path / "x.jsonl"
    path.write_text('{"latent": 1}\n[1, 2]\nnope\n\n{"latent": 2}\n')
    assert [r["latent"] for r in read_jsonl(path)] == [1, 2]
    assert "line 2" in caplog.text and "line 3" in caplog.text


def test_old_labels_and_line_files_read_as_explanations(tmp_path):
    (tmp_path / "labels.jsonl").write_text(json.dumps({"latent": 0, "label": "wheel", "status": "ok"}) + "\n")
    (tmp_path / "line").mkdir()
    (tmp_path / "line/summary.jsonl").write_text(json.dumps({"latent": 0, "best_concept": "ring", "best_score": 0.9}) + "\n"
                                                 + json.dumps({"latent": 1, "best_concept": None}) + "\n")  # fmt: skip
    assert explanation_methods(tmp_path) == ["labels", "line"]
    assert preferred_texts(tmp_path) == {0: ("ring", "line")}
    assert preferred_texts(tmp_path, "labels") == {0: ("wheel", "labels")}


def test_latent_specs_are_checked_before_they_are_expanded():
    assert parse_latents("0-3, 7,5") == [0, 1, 2, 3, 5, 7]
    for bad in ("", "a-b", "5-2", "-1"):
        with pytest.raises(ValueError, match="bad latent range"):
            parse_latents(bad)
    with pytest.raises(ValueError, match="beyond any SAE"):
        parse_latents("0-99999999999")
    neurons = [NeuronRecord(i, dead=i % 3 == 0) for i in range(30)]
    assert choose_latents("all", neurons) == [i for i in range(30) if i % 3]
    sample = choose_latents("sample:5", neurons)
    assert sample == sample_live(neurons, 5, 0) and len(sample) == 5 and all(i % 3 for i in sample)
    assert choose_latents("sample:5:1", neurons) != sample
    with pytest.raises(ValueError, match="not in the report"):
        choose_latents("40", neurons)
    with pytest.raises(ValueError, match="sample:N"):
        choose_latents("sample:x", neurons)


def test_atomic_json_never_leaves_a_temporary_file(tmp_path):
    write_json(tmp_path / "a" / "b.json", {"x": float("nan"), "y": [1.0]})
    assert json.loads((tmp_path / "a/b.json").read_text()) == {"x": None, "y": [1.0]}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.json"]


def test_summary_blocks_are_typed_and_checked(tmp_path):
    from sae_lab.run.summary import BLOCKS, read_blocks, update_summary

    path = tmp_path / "summary.json"
    update_summary(path, "classifier", {"val_acc": 0.96, "seconds": 165.0})
    update_summary(path, "le", {"latents": 493, "seconds": 3.4, "label": {"select_r": 0.75}})
    update_summary(path, "total_seconds", 320.5)  # not a stage block: written as given
    blocks = read_blocks(path)
    assert blocks["classifier"] == BLOCKS["classifier"](seconds=165.0, val_acc=0.96)
    assert blocks["le"].latents == 493 and blocks["le"].extra == {"label": {"select_r": 0.75}}
    assert blocks["le"].to_json() == {"seconds": 3.4, "latents": 493, "label": {"select_r": 0.75}}
    assert blocks["total_seconds"] == 320.5
    with pytest.raises(TypeError, match="val_acc must be a number"):
        update_summary(path, "classifier", {"val_acc": "high"})
    assert read_blocks(path)["classifier"].val_acc == 0.96  # a refused block leaves the file alone
    update_summary(path, "sae", {"fvu": float("nan"), "seconds": 1.0})
    assert read_blocks(path)["sae"].fvu is None  # NaN is written as null


def test_a_second_writer_of_one_method_on_one_run_is_refused_naming_the_first(tmp_path):
    import subprocess
    import sys

    from sae_lab.explainers.base import get_explainer
    from sae_lab.run.lock import RunLocked, run_lock

    write_jsonl(tmp_path / "neurons.jsonl", [{**V1, "id": 0}])
    explainer = get_explainer("labels")
    settings = explainer.settings(run=str(tmp_path), progress=False)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from sae_lab.run.lock import run_lock\n"
        f"with run_lock({str(tmp_path)!r}, 'explain-labels'):\n    print('held', flush=True); time.sleep(30)")],
        stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=rf"another `explain-labels` run \(pid {holder.pid}"):
            explainer.run(settings)
    finally:
        holder.kill()
        holder.wait()
    assert explainer.run(settings)["labelled"] == 1  # the lock died with its holder
    with run_lock(tmp_path, "explain-le"):  # another method's lock does not block labels
        assert explainer.run(settings)["failed"] == 0
