"""``explain patches`` with an LLM refusing every request (issue 19, item 5): the latents whose vocabularies all fell
back are no labels, marked ``detail["failed"]``, and a plain re-run (no --overwrite) tries them again."""

from __future__ import annotations

from sae_lab.backends.text.base import GenerationResult
from sae_lab.explainers.patches import PatchSettings, run_patches
from sae_lab.explainers.patches.explain import CALLS_FAILED
from sae_lab.run import ExplanationStore, preferred_texts
from tests.explainers.patches.patch_fixtures import FAST, ScriptedLLM, make_run
from tests.helpers.threads import one_thread  # noqa: F401

KEY = "sk-revoked0123456789abcdefABCDEF"


class RefusingLLM(ScriptedLLM):
    """Every request answered 401 (the backend's own retries spent), the key echoed as a careless server would."""

    def generate(self, requests):
        self.requests.extend(requests)
        return [GenerationResult(None, error=f"HTTP 401: invalid api key {KEY}") for _ in requests]


def test_latents_whose_llm_calls_all_failed_are_marked_and_retried_without_overwrite(classifier_ckpt, tmp_path,
                                                                                      monkeypatch):  # fmt: skip
    import sae_lab.backends.text as text

    run = make_run(tmp_path, classifier_ckpt)
    settings = PatchSettings(run=str(run), latents="1-2", llm="hf:fake-model", max_retries=1, **FAST)
    refusing = RefusingLLM(lambda prompt, r: "")
    monkeypatch.setattr(text, "make_backend", lambda spec, **kw: refusing)
    down = run_patches(settings)
    recs = ExplanationStore(run, "patches").latest()
    assert refusing.requests and down["explained"] == 0 and sorted(recs) == [1, 2]
    for r in recs.values():
        assert r.detail["failed"] and r.text is None and not r.ok
        assert r.reason.startswith(CALLS_FAILED) and "HTTP 401" in r.reason and KEY not in r.reason
        assert r.detail["patches"]  # the occlusion evidence is kept
    assert preferred_texts(run) == {}  # nothing of it passes for a label
    assert ExplanationStore(run, "patches").done(settings.settings_hash()) == set()

    working = ScriptedLLM(lambda prompt, r: "1. circle\n2. spokes\n3. zigzag lines\n4. dots")
    monkeypatch.setattr(text, "make_backend", lambda spec, **kw: working)
    up = run_patches(settings)  # the same settings: the failed latents again
    recs = ExplanationStore(run, "patches").latest()
    assert working.requests and up["explained"] == 2
    assert all(r.ok and "failed" not in r.detail and "vocabulary_fallback" not in r.detail for r in recs.values())
    asked = len(working.requests)
    assert run_patches(settings)["explained"] == 2 and len(working.requests) == asked  # done, vocabularies cached
