"""DnD after failures (issue 19, items 5 and 3): latents whose backend calls failed are marked ``detail["failed"]``
and tried again by a plain re-run; the prompt template travels in every record, so a run killed after changing it
never leaves records that evaluate's held-out check reads under another run's template."""

from __future__ import annotations

import pytest

from sae_lab.backends.image import RendererBackend
from sae_lab.backends.perception import OfflineCaptioner
from sae_lab.backends.text.base import GenerationResult
from sae_lab.evaluate.heldout import check_heldout, recorded_generation
from sae_lab.evaluate.settings import SEED_SPACE
from sae_lab.explainers.dnd import DndEngine, DndSettings, run_dnd
from sae_lab.run import ExplanationStore, RunFiles, read_explanations, read_json
from tests.explainers.dnd.dnd_fixtures import *  # noqa: F403 -- fixtures (autouse ones included)
from tests.explainers.dnd.dnd_fixtures import FAST, make_run
from tests.explainers.dnd.test_dnd_summarize import FakeLLM

OTHER = "an ink doodle of {concept}"


def test_latents_whose_images_all_failed_are_marked_and_retried_without_overwrite(classifier_ckpt, tmp_path,
                                                                                  monkeypatch):  # fmt: skip
    run = make_run(tmp_path, classifier_ckpt)
    with monkeypatch.context() as m:  # the image service down: every image None
        m.setattr(RendererBackend, "generate", lambda self, prompts, seeds: [None] * len(prompts))
        down = run_dnd(DndSettings(run=str(run), **FAST))
    recs = ExplanationStore(run, "dnd").latest()
    assert down["explained"] == 0 and sorted(recs) == [1, 2, 3, 4]
    assert all(r.detail["failed"] and not r.ok and "no image could be generated" in r.reason for r in recs.values())
    assert ExplanationStore(run, "dnd").done(DndSettings(run=str(run), **FAST).settings_hash()) == set()

    up = run_dnd(DndSettings(run=str(run), **FAST))  # the same settings, no --overwrite: the failed ones again
    recs = ExplanationStore(run, "dnd").latest()
    assert up["explained"] == 4 and up["images_generated"] > 0
    assert all(r.ok and "failed" not in r.detail for r in recs.values())
    assert run_dnd(DndSettings(run=str(run), **FAST))["images_generated"] == 0  # now done: nothing redone


def test_every_llm_request_failing_names_nothing_and_is_retried(classifier_ckpt, tmp_path):
    """A refused key: the offline noun-phrase rule does not pass for the LLM's answer, no image is drawn for it."""
    run = make_run(tmp_path, classifier_ckpt)
    refused = FakeLLM(lambda r: None)
    refused.generate = lambda requests: [GenerationResult(None, error="HTTP 401: invalid api key") for _ in requests]
    down = run_dnd(DndSettings(run=str(run), **FAST), parts={"llm": refused})
    recs = ExplanationStore(run, "dnd").latest()
    assert down["explained"] == 0 and down["images_generated"] == 0
    assert all(r.detail["failed"] and r.text is None and "every LLM request failed (HTTP 401" in r.reason
               for r in recs.values())  # fmt: skip
    assert run_dnd(DndSettings(run=str(run), **FAST))["explained"] == 4  # retried (here by the offline rule)


def test_a_run_killed_after_changing_the_template_keeps_each_records_template(classifier_ckpt, tmp_path,
                                                                              monkeypatch):  # fmt: skip
    """Before: ``dnd/settings.json`` (the only place the template was) was rewritten before any record, so a kill
    left the new template beside the old records and evaluate accepted the old template as held out."""
    run = make_run(tmp_path, classifier_ckpt)
    files = RunFiles(run)
    opts = {**FAST, "chunk_size": 2}
    run_dnd(DndSettings(run=str(run), **opts))
    first = read_json(files.method_dir("dnd") / "settings.json")
    assert first["template"] == DndSettings().template and first["run"] == "."
    explain = DndEngine.explain

    def killed_in_the_first_chunk(self, latents):
        raise KeyboardInterrupt

    monkeypatch.setattr(DndEngine, "explain", killed_in_the_first_chunk)
    with pytest.raises(KeyboardInterrupt):
        run_dnd(DndSettings(run=str(run), template=OTHER, overwrite=True, **opts))
    assert read_json(files.method_dir("dnd") / "settings.json") == first  # no record of the new run: no new copy
    recs = read_explanations(run, ["dnd"])["dnd"]
    assert {r.detail["template"] for r in recs.values()} == {DndSettings().template}
    with pytest.raises(ValueError, match="held-out template .* is the one explanations/dnd.jsonl used"):
        check_heldout(DndSettings().template, SEED_SPACE, 50, recorded_generation(files, {"dnd": recs}))

    calls = []

    def killed_in_the_second_chunk(self, latents):
        calls.append(latents)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return explain(self, latents)

    monkeypatch.setattr(DndEngine, "explain", killed_in_the_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        run_dnd(DndSettings(run=str(run), template=OTHER, overwrite=True, **opts))
    recs = read_explanations(run, ["dnd"])["dnd"]
    assert {i: r.detail["template"] for i, r in recs.items()} == {1: OTHER, 2: OTHER, 3: DndSettings().template,
                                                                  4: DndSettings().template}  # fmt: skip
    assert read_json(files.method_dir("dnd") / "settings.json")["template"] == OTHER  # written after its records
    used = recorded_generation(files, {"dnd": recs})
    for template in (OTHER, DndSettings().template):  # both are refused as held out, whatever settings.json says
        with pytest.raises(ValueError, match="held-out template"):
            check_heldout(template, SEED_SPACE, 50, used)
    check_heldout("a quick pencil sketch of {concept}", SEED_SPACE, 50, used)


class DownCaptioner(OfflineCaptioner):
    """Every caption request failed."""

    def _caption(self, images):
        return [None] * len(images)


def test_latents_no_image_of_which_could_be_captioned_are_marked_failed(classifier_ckpt, tmp_path):
    run = make_run(tmp_path, classifier_ckpt)
    down = run_dnd(DndSettings(run=str(run), **FAST), parts={"captioner": DownCaptioner()})
    recs = ExplanationStore(run, "dnd").latest()
    assert down["explained"] == 0 and down["caption_failures"] > 0
    assert all(r.detail["failed"] and r.reason == "no image could be captioned" for r in recs.values())
    assert run_dnd(DndSettings(run=str(run), **FAST))["explained"] == 4
