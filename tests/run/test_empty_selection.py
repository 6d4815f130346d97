"""A selection of no latent is refused by every method before anything is read or replaced (issue 19, item 5:
``--latents auto:0 --overwrite`` emptied ``line/summary.jsonl`` with exit code 0)."""

from __future__ import annotations

import pytest

from sae_lab.explainers.base import available, get_explainer
from sae_lab.run import ExplanationRecord, ExplanationStore, NeuronRecord, RunFiles
from sae_lab.run.io import write_jsonl
from sae_lab.run.store import write_neurons
from tests.helpers.runs import make_tiny_run
from tests.helpers.threads import one_thread  # noqa: F401


@pytest.fixture(scope="module")
def dead_run(classifier_ckpt, tmp_path_factory):
    """A tiny run whose report finds every latent dead, with an earlier explanation in every method's file."""
    run = make_tiny_run(tmp_path_factory.mktemp("dead"), classifier_ckpt, num_latents=4)
    files = RunFiles(run)
    write_neurons(files.neurons, [NeuronRecord(latent=i, dead=True) for i in range(4)])
    for method in ("labels", "line", "le-label", "le-vlm", "dnd", "patches"):
        write_jsonl(files.explanations(method), [ExplanationRecord.single(0, method, "circle").to_json()])
    write_jsonl(files.labels, [{"latent": 0, "label": "circle", "status": "ok"}])
    write_jsonl(files.line_summary, [{"latent": 0, "best_concept": "circle", "best_score": 0.9}])
    return run


def snapshot(run) -> dict[str, bytes]:
    return {
        str(p.relative_to(run)): p.read_bytes()
        for p in sorted(run.rglob("*"))
        if p.is_file() and ".locks" not in p.parts
    }


@pytest.mark.parametrize("method", available())
@pytest.mark.parametrize("latents", ["all", "sample:3"])
def test_every_method_refuses_an_empty_selection_and_changes_nothing(dead_run, method, latents):
    explainer = get_explainer(method)
    before = snapshot(dead_run)
    settings = explainer.settings(run=str(dead_run), latents=latents, overwrite=True)
    with pytest.raises(ValueError, match="choose no latent"):
        explainer.run(settings)
    assert snapshot(dead_run) == before
    for name in explainer.methods:
        assert ExplanationStore(dead_run, name).latest()[0].text == "circle"


def test_the_cli_says_so_in_one_line(dead_run, cli, tmp_path):
    out = cli("explain", "dnd", "--run", str(dead_run), "--latents", "all", "--overwrite", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "error: latents 'all' choose no latent to explain (the report has 4 latents, 0 live)" in out.stderr
