"""The pipeline from one `fit`: report → explainers → evaluate as chained callbacks, on one rank and under DDP."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import yaml

from sae_lab.run import ExplanationStore, read_json
from tests.lit.test_sae_module import sae_config

REPORT = {"class_path": "sae_lab.report.callback.ReportCallback",
          "init_args": {"run_dir": "reports/tiny", "knockout_latents": 4, "n_exemplars": 2}}  # fmt: skip
LE = {"latents": "all", "n_images": 64}
LINE = {"latents": "0-3", "n_iters": 1, "n_images": 2, "n_control": 16}


def explain(method: str, **settings) -> dict:
    return {"class_path": "sae_lab.explainers.callback.ExplainCallback",
            "init_args": {"method": method, "run_dir": "reports/tiny", "settings": settings}}  # fmt: skip


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def texts(run, method: str) -> dict[int, tuple]:
    """Per latent what a method says (text, terms, bias): the cost and timing fields aside."""
    out = {}
    for latent, r in ExplanationStore(run, method).latest().items():
        out[latent] = (r.text, [(t.concept, round(t.weight, 4)) for t in r.terms], r.bias and round(r.bias, 4))
    return out


@pytest.mark.slow
def test_one_fit_writes_report_explanations_and_evaluation_and_a_killed_fit_resumes(tmp_path, classifier_ckpt, cli):
    evaluate = {"class_path": "sae_lab.evaluate.callback.EvaluateCallback",
                "init_args": {"run_dir": "reports/tiny", "settings": {"n_latents": 8, "n_images": 4,
                                                                       "probe_images": 64}}}  # fmt: skip
    kill = {"class_path": "tests.helpers.callbacks.KillAtFitEnd"}
    chain = [REPORT, explain("labels"), kill, explain("le", **LE), explain("line", **LINE), evaluate]
    cfg = sae_config(tmp_path, classifier_ckpt, chain, max_epochs=1)
    r = cli("fit", "--config", str(cfg), cwd=tmp_path, timeout=600)
    assert r.returncode == 17, r.stderr[-3000:]  # killed after the labels, before LE
    run = tmp_path / "reports/tiny"
    labels = digest(run / "explanations/labels.jsonl")
    assert not (run / "explanations/le-label.jsonl").exists()
    weights = digest(tmp_path / "checkpoints/sae/sae.safetensors")

    chain.remove(kill)
    cfg = sae_config(tmp_path, classifier_ckpt, chain, max_epochs=1)
    r = cli("fit", "--config", str(cfg), "--ckpt_path", "last", cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert digest(tmp_path / "checkpoints/sae/sae.safetensors") == weights  # nothing was trained again
    assert digest(run / "explanations/labels.jsonl") == labels  # nothing was explained twice
    for method in ("le-label", "le-vlm", "line"):
        assert ExplanationStore(run, method).latest(), method
    assert sorted(ExplanationStore(run, "line").latest()) == [0, 1, 2, 3]
    evaluation = read_json(run / "evaluation.json")
    assert {"labels", "le-label", "le-vlm", "line", "random", "top-class"} <= set(evaluation["methods"])
    summary = read_json(run / "summary.json")
    assert {"labels", "le", "line", "evaluation"} <= set(summary)


@pytest.mark.slow
def test_under_ddp_each_latent_is_explained_once_and_the_merge_equals_one_rank(tmp_path, classifier_ckpt, cli):
    chain = [REPORT, explain("le", **LE), explain("line", **LINE)]
    cfg = sae_config(tmp_path, classifier_ckpt, chain, max_epochs=1, strategy="ddp", devices=2)
    r = cli("fit", "--config", str(cfg), cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "reports/tiny"
    shares = [set(ExplanationStore(run / "ranks" / str(rank), "le-label").latest()) for rank in (0, 1)]
    assert shares[0] and shares[1] and not shares[0] & shares[1]  # disjoint shares, both ranks worked
    merged = texts(run, "le-label")
    assert set(merged) == shares[0] | shares[1]
    assert sorted(texts(run, "line")) == [0, 1, 2, 3]

    one = tmp_path / "reports/one"  # the same SAE and report, explained by one process
    one.mkdir(parents=True)
    for name in ("neurons.jsonl", "report.json"):
        shutil.copy(run / name, one / name)
    sae = str(tmp_path / "checkpoints/sae")
    for method, settings in (("le", LE), ("line", LINE)):
        extra = [x for k, v in settings.items() for x in (f"--{k}", str(v))]
        r = cli("explain", method, "--run", str(one), "--sae", sae, *extra, cwd=tmp_path, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    for method in ("le-label", "le-vlm", "line"):
        assert texts(one, method) == texts(run, method), method
    assert yaml.safe_load((run / "summary.json").read_text())["le"]["ranks"] == 2
