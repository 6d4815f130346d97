"""LINE never mixes two runs, never labels with null scores, and resumes a moved folder (issue 19, items 3, 5, 9).

Each test starts from the issue's reproduction: a crash right after ``explain line --overwrite`` began with other
settings (or other latents); an image backend refusing every image (Replicate answering 401); ``--latents auto:0
--overwrite``; a finished run folder copied elsewhere.
"""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from sae_lab.__main__ import main
from sae_lab.backends.image import RendererBackend
from sae_lab.explainers.line import LineConfig, LineSession, LineSettings
from sae_lab.explainers.line.stage import run as run_line
from sae_lab.run import ExplanationStore, RunFiles, preferred_texts
from tests.explainers.line.line_fixtures import *  # noqa: F403 -- the LINE fixtures (autouse ones included)
from tests.helpers.common import QuietHandler, serve_on_loopback
from tests.helpers.runs import make_tiny_run

SMALL = {"n_iters": 2, "n_images": 2, "n_control": 16, "pool_size": 5}


class Counting(RendererBackend):
    def __init__(self) -> None:
        super().__init__(32)
        self.images = 0

    def generate(self, prompts, seeds):
        self.images += len(prompts)
        return super().generate(prompts, seeds)


def line(folder, sae_dir, latents=(0, 3), overwrite=False, backend=None, **cfg):
    session = LineSession(folder, sae_dir, LineConfig(**{**SMALL, **cfg}), backend or Counting(), progress=False)
    return session.run(list(latents), overwrite=overwrite), session


def outputs(folder) -> dict[str, str]:
    files = RunFiles(folder)
    return {
        p.name: p.read_text() for p in (files.line_summary, files.explanations("line"), files.line_dir / "state.json")
    }


class Killed(Exception):
    pass


def test_a_crash_right_after_overwrite_began_never_mixes_two_runs(sae_dir, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    auc, _ = line(folder, sae_dir)
    before = outputs(folder)

    # `explain --overwrite --metric mad` killed before its first state was saved; params.json rewritten as the old
    # code did first thing (the reproduction)
    monkeypatch.setattr(LineSession, "_initial_pools", lambda *a: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        line(folder, sae_dir, overwrite=True, metric="mad")
    monkeypatch.undo()
    mad_params = {**json.loads((folder / "line/params.json").read_text()), "metric": "mad"}
    (folder / "line/params.json").write_text(json.dumps(mad_params))
    assert outputs(folder) == before  # nothing of the old run was replaced yet

    with pytest.raises(ValueError, match=r"other settings \(metric\)"):  # no resume of AUC values as mad ones
        line(folder, sae_dir, metric="mad")
    with pytest.raises(ValueError, match=r"other settings \(latents\)"):  # other latents: refused, no KeyError
        line(folder, sae_dir, latents=(1, 2))
    drawn = Counting()
    again, _ = line(folder, sae_dir, backend=drawn)  # the old settings resume the old, finished run
    assert again == auc and drawn.images == 0

    # killed after the new run's first save: its state (mad) resumes, and gives what an uninterrupted mad run gives
    monkeypatch.setattr(LineSession, "_iterate", lambda *a: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        line(folder, sae_dir, overwrite=True, metric="mad")
    monkeypatch.undo()
    state = json.loads((folder / "line/state.json").read_text())
    assert state["iteration"] == 0 and state["settings"]["metric"] == "mad"
    with pytest.raises(ValueError, match=r"other settings \(metric\)"):
        line(folder, sae_dir)  # the auc run is gone now: resuming mad's state under auc is refused
    resumed, _ = line(folder, sae_dir, metric="mad")
    fresh, _ = line(tmp_path / "fresh", sae_dir, metric="mad")
    assert [(r["best_concept"], r["best_score"], r["metric"]) for r in resumed] == [
        (r["best_concept"], r["best_score"], r["metric"]) for r in fresh
    ]


class FailingReplicate:
    """Replicate's API on loopback answering 401 to everything, as with a revoked token."""

    def __init__(self) -> None:
        class Handler(QuietHandler):
            def _deny(self) -> None:
                body = (
                    b'{"title":"Unauthenticated","detail":"You did not pass a valid authentication token","status":401}'
                )
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _deny

        self.httpd, self.url = serve_on_loopback(Handler)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_an_image_backend_failing_every_image_exits_non_zero_and_replaces_nothing(sae_dir, tmp_path, monkeypatch,
                                                                                  capsys):  # fmt: skip
    folder = tmp_path / "run"
    line(folder, sae_dir)
    before = outputs(folder)
    labels = preferred_texts(folder)
    token = "r8_revokedToken0123456789abcdef"
    fake = FailingReplicate()
    monkeypatch.setenv("REPLICATE_API_TOKEN", token)
    monkeypatch.setenv("REPLICATE_BASE_URL", fake.url)
    try:
        code = main(["explain", "line", "--run", str(folder), "--sae", str(sae_dir), "--latents", "0,3", "--overwrite",
                     "--images", "replicate:acme/t2i", "--n-iters", "2", "--n-images", "2", "--n-control", "16",
                     "--pool-size", "5", "--no-progress"])  # fmt: skip
    finally:
        fake.close()
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert "the image backend replicate:acme/t2i made none of the" in err and "401" in err and token not in err
    assert outputs(folder) == before and preferred_texts(folder) == labels  # the earlier results stand


def test_null_scores_are_no_labels_and_claim_nothing(sae_dir, tmp_path):
    """Every image of one latent's concepts fails (the others' come back): that latent's best concept has a null
    score, and no reader takes it for a label."""
    from sae_lab.explainers.line.config import SKETCH_TEMPLATE
    from sae_lab.explainers.line.stage import gt_named_rate

    latents = (0, 1, 2, 3)
    _, trial = line(tmp_path / "trial", sae_dir, latents=latents, n_iters=0)
    state = json.loads((trial.out / "state.json").read_text())["latents"]
    initial = {int(k): set(v["top_classes"] + v["random_classes"]) for k, v in state.items()}
    allowed = set().union(*(initial[i] for i in latents[1:])) - initial[0]
    assert all(initial[i] & allowed for i in latents[1:])  # every other latent keeps a drawable concept
    prefix = SKETCH_TEMPLATE.split("{concept}")[0]

    class FailsLatentZero(Counting):
        def generate(self, prompts, seeds):
            images = super().generate(prompts, seeds)
            return [im if pr.removeprefix(prefix) in allowed else None for im, pr in zip(images, prompts)]

    folder = tmp_path / "run"
    lines, _ = line(folder, sae_dir, latents=latents, backend=FailsLatentZero(), n_iters=0)
    by_latent = {r["latent"]: r for r in lines}
    assert by_latent[0]["best_score"] is None and all(by_latent[i]["best_score"] is not None for i in latents[1:])
    records = ExplanationStore(folder, "line").latest()
    assert records[0].text is None and not records[0].ok and "every image" in records[0].reason
    assert all(records[i].ok and records[i].text == by_latent[i]["best_concept"] for i in latents[1:])
    assert 0 not in preferred_texts(folder) and set(preferred_texts(folder)) == set(latents[1:])
    claimed = [{**by_latent[0], "ground_truth": {"primitive": "circle", "image_auc": 1.0}}]
    assert gt_named_rate(claimed) == (None, 0)  # a null score names nothing


def test_an_empty_selection_is_refused_before_anything_is_replaced(sae_dir, tmp_path, capsys):
    folder = tmp_path / "run"
    line(folder, sae_dir)
    before = outputs(folder)
    code = main(["explain", "line", "--run", str(folder), "--sae", str(sae_dir), "--latents", "auto:0", "--overwrite"])
    assert code == 2 and "auto:N needs a positive N" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no latents to explain"):
        line(folder, sae_dir, latents=(), overwrite=True)
    assert outputs(folder) == before


def test_a_copied_run_folder_resumes_without_redoing_work(classifier_ckpt, tmp_path, caplog):
    report = make_tiny_run(tmp_path / "a", classifier_ckpt)
    settings = {"latents": "1,2", **SMALL, "progress": False}
    first = run_line(LineSettings(run=str(report), **settings))
    params = json.loads((report / "line/params.json").read_text())
    assert params["paths"]["sae_dir"] == "../../checkpoints/tiny/sae" and "sae_dir" not in params
    state_before = json.loads((report / "line/state.json").read_text())

    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")  # nothing may still point at the old place
    moved = tmp_path / "b/reports/tiny"
    cache = {p.name: p.stat().st_mtime_ns for p in (moved / "line/cache").glob("*.png")}
    with caplog.at_level(logging.INFO):
        again = run_line(LineSettings(run=str(moved), **settings))
    assert "resuming after iteration 3" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in (moved / "line/cache").glob("*.png")} == cache  # nothing drawn
    state = json.loads((moved / "line/state.json").read_text())
    assert state["images_generated"] == state_before["images_generated"] and again["latents"] == first["latents"]
    assert again["gt_named_rate"] == first["gt_named_rate"]
