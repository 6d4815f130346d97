"""A stage whose every call failed exits non-zero with a clear line, and nothing of it passes for a label (issue 19,
item 5): DnD with an image backend answering 401 to every image, labels with an LLM refusing every request."""

from __future__ import annotations

import json

from sae_lab.__main__ import main
from sae_lab.run import ExplanationStore, preferred_texts
from tests.backends.text.llm_fakes import FakeServer, Reply
from tests.explainers.dnd.dnd_fixtures import *  # noqa: F403 -- fixtures (autouse ones included)
from tests.explainers.dnd.dnd_fixtures import FAST, make_run
from tests.explainers.line.line_fixtures import no_proxies  # noqa: F401 (autouse: loopback traffic skips proxies)


def test_dnd_with_every_image_refused_exits_non_zero_and_labels_nothing(classifier_ckpt, tmp_path, monkeypatch,
                                                                        capsys):  # fmt: skip
    """The real Replicate client, its HTTP answered 401 (``httpx.MockTransport``), as DnD's image backend."""
    import dataclasses

    import httpx

    from sae_lab.backends.image import ReplicateImageBackend
    from sae_lab.backends.text.remote import RetryPolicy
    from sae_lab.commands.explain import run_method
    from sae_lab.explainers.base import get_explainer
    from sae_lab.explainers.dnd import DndSettings, run_dnd

    run = make_run(tmp_path, classifier_ckpt)
    token = "r8_revokedToken0123456789abcdef"
    monkeypatch.setenv("REPLICATE_API_TOKEN", token)
    deny = httpx.MockTransport(lambda request: httpx.Response(401, json={"title": "Unauthenticated", "status": 401}))
    images = ReplicateImageBackend("acme/t2i", transport=deny, retry=RetryPolicy(max_retries=0))
    explainer = dataclasses.replace(get_explainer("dnd"), run=lambda s: run_dnd(s, parts={"images": images}))
    code = run_method(explainer, DndSettings(run=str(run), **FAST))
    out, err = capsys.readouterr()
    assert code == 1 and json.loads(out.splitlines()[-1])["explained"] == 0
    assert "error: dnd explained none of its 4 latents: no image could be generated for any candidate" in err
    assert token not in out + err
    assert not any(r.ok for r in ExplanationStore(run, "dnd").latest().values())
    assert preferred_texts(run) == {}


def test_labels_with_every_request_refused_exits_non_zero_with_the_reason(classifier_ckpt, tmp_path, capsys):
    run = make_run(tmp_path, classifier_ckpt)
    fake = FakeServer(lambda req: Reply(401, {"error": "invalid api key"}))
    try:
        code = main(["explain", "labels", "--run", str(run), "--llm", f"openai:m@{fake.url}/v1", "--no-progress",
                     "--latents", "1-3"])  # fmt: skip
    finally:
        fake.close()
    err = capsys.readouterr().err
    assert code == 1 and "error: labels explained none of its" in err and "HTTP 401" in err
    assert preferred_texts(run) == {}


def test_records_with_a_null_score_written_before_the_fix_are_no_labels(tmp_path):
    """The issue's files: ``explanations/line.jsonl`` naming concepts whose scores are null (every image failed);
    ``why`` (``read_labels``), the report and ``preferred_texts`` fall back to the next method."""
    from sae_lab.inference.lab import read_labels
    from sae_lab.run import ExplanationRecord
    from sae_lab.run.io import write_jsonl

    null = ExplanationRecord.single(0, "line", "circle", detail={"metric": "auc", "score": None})
    real = ExplanationRecord.single(1, "line", "spokes", detail={"metric": "auc", "score": 0.91})
    write_jsonl(tmp_path / "explanations/line.jsonl", [null.to_json(), real.to_json()])
    write_jsonl(tmp_path / "explanations/labels.jsonl", [ExplanationRecord.single(0, "labels", "wheel").to_json()])
    assert not ExplanationStore(tmp_path, "line").latest()[0].ok
    assert preferred_texts(tmp_path) == {0: ("wheel", "labels"), 1: ("spokes", "line")}
    assert read_labels(tmp_path) == preferred_texts(tmp_path)
