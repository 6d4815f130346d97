"""The LINE loop end to end: outputs, shared work across latents, LLM proposers inside the loop, and
kill-and-resume through the real command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sae_lab.__main__ import main
from sae_lab.backends.image import RendererBackend
from sae_lab.backends.text.base import GenerationResult, TextBackend
from sae_lab.explainers.line import LineConfig, LineSession, explain, gt_named_rate, parse_latents, run_line_stage
from tests.backends.text.test_hf import tiny_model_dir  # noqa: F401 -- the tiny random Llama fixture of the LLM tests
from tests.explainers.line.line_fixtures import *  # noqa: F403 -- the LINE fixtures (autouse ones included)

REPO = Path(__file__).resolve().parents[2]
LATENTS = [0, 3]
CONFIG = {"n_iters": 2, "n_images": 2, "n_control": 16, "n_top_classes": 3, "n_random": 2, "pool_size": 5}


def config(**overrides) -> LineConfig:
    return LineConfig(**{**CONFIG, **overrides})


class CountingRenderer(RendererBackend):
    def __init__(self, image_size: int = 32) -> None:
        super().__init__(image_size)
        self.images = 0

    def generate(self, prompts, seeds):
        self.images += len(prompts)
        return super().generate(prompts, seeds)


def run(tmp: Path, sae_dir: Path, latents=LATENTS, **kwargs) -> tuple[list[dict], LineSession]:
    overwrite = kwargs.pop("overwrite", False)
    session = LineSession(tmp, sae_dir, kwargs.pop("cfg", config()), progress=False, **kwargs)
    return session.run(latents, overwrite=overwrite), session


@pytest.fixture(scope="module")
def reference(sae_dir, tmp_path_factory):
    backend = CountingRenderer()
    lines, session = run(tmp_path_factory.mktemp("ref") / "run", sae_dir, image_backend=backend)
    return lines, session, backend


def test_outputs_per_latent_and_summary(reference):
    lines, session, _ = reference
    out = session.out
    assert [r["latent"] for r in lines] == LATENTS
    summary = [json.loads(x) for x in (out / "summary.jsonl").read_text().splitlines()]
    assert summary == json.loads(json.dumps(lines))
    for r in summary:
        assert {"latent", "best_concept", "best_score", "page"} <= set(r) and r[
            "page"
        ] == f"line/{r['latent']}/index.html"
        folder = out / str(r["latent"])
        proposals = [json.loads(x) for x in (folder / "proposals.jsonl").read_text().splitlines()]
        assert [p["iteration"] for p in proposals] == [1, 2, 3] and proposals[-1]["summary"]
        assert all(p["reasoning"].startswith("offline") for p in proposals)
        history = [json.loads(x) for x in (folder / "history.jsonl").read_text().splitlines()]
        assert [h["iteration"] for h in history] == [0, 1, 2, 3]
        assert max(h["best_score"] for h in history) == r["best_score"] == history[-1]["best_score"]
        params = json.loads((folder / "params.json").read_text())
        assert params["latent"] == r["latent"] and len(params["top_classes"]) == 3 and params["seed"] == 0
        page = (folder / "index.html").read_text()
        assert "<svg" in page and r["best_concept"] in page and "../cache/" in page
    state = json.loads((out / "state.json").read_text())
    assert state["done"] and state["iteration"] == CONFIG["n_iters"] + 1
    assert (out / "control.safetensors").is_file()
    from sae_lab.run import ExplanationStore

    explained = ExplanationStore(session.run_dir, "line").latest()  # the one schema
    assert sorted(explained) == LATENTS
    for r in summary:
        rec = explained[r["latent"]]
        assert rec.text == r["best_concept"] and rec.terms[0].concept == r["best_concept"]
        assert rec.candidates[0] == {"concept": r["best_concept"], "score": r["best_score"]}
        assert rec.cost.images_generated * len(LATENTS) == pytest.approx(state["images_generated"], abs=len(LATENTS))
        assert rec.backends["sae"] == session.sae_id and rec.settings_hash


def test_concepts_are_generated_once_and_batched_equals_one_at_a_time(reference, sae_dir, tmp_path):
    lines, session, backend = reference
    latents = json.loads((session.out / "state.json").read_text())["latents"].values()
    requested = sum(len(ls["scored"]) for ls in latents)
    unique = len({c for ls in latents for c in ls["scored"]})
    assert backend.images == session.cache.generated == len(list((session.out / "cache").glob("*.png")))
    assert backend.images == unique * CONFIG["n_images"]  # each concept drawn once, whoever asked for it
    single_images = 0
    for lat, expected in zip(LATENTS, lines):
        alone = CountingRenderer()
        [line], _ = run(tmp_path / f"single-{lat}", sae_dir, [lat], image_backend=alone)
        single_images += alone.images
        assert (line["best_concept"], line["best_score"]) == (expected["best_concept"], expected["best_score"])
    assert single_images == requested * CONFIG["n_images"]


def test_other_settings_are_refused_and_overwrite_keeps_the_cache(reference, sae_dir):
    _, session, _ = reference
    with pytest.raises(ValueError, match="metric"):
        run(session.run_dir, sae_dir, cfg=config(metric="mad"))
    again = CountingRenderer()
    lines, _ = run(session.run_dir, sae_dir, image_backend=again)  # same settings: nothing to do, nothing drawn
    assert again.images == 0 and lines == reference[0]
    cache = session.out / "cache"
    before = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.png")}
    lines, _ = run(session.run_dir, sae_dir, cfg=config(metric="mad"), image_backend=again, overwrite=True)
    after = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.png")}
    assert all(r["metric"] == "mad" for r in lines)
    assert all(after[k] == v for k, v in before.items()) and again.images == len(after) - len(before)


class Scripted(TextBackend):
    """Proposes the same fresh primitive for every latent of a batch; records each batch's size."""

    name = "scripted"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def generate(self, requests):
        self.batches.append(len(requests))
        answer = ["zigzag", "spiral", "wave", "hatching", "cross", "arc", "triangle"][len(self.batches) - 1]
        return [GenerationResult(f"<thinking>try {answer}</thinking><answer>{answer}</answer>") for _ in requests]


def test_llm_proposer_one_batched_call_per_iteration_and_shared_images(sae_dir, tmp_path):
    llm, images = Scripted(), CountingRenderer()
    _, session = run(tmp_path / "run", sae_dir, cfg=config(n_iters=3), llm=llm, image_backend=images)
    assert llm.batches == [2, 2, 2, 2]  # every latent in one call per iteration (the summary included)
    proposals = [json.loads(x) for x in (session.out / "0/proposals.jsonl").read_text().splitlines()]
    assert [p["concept"] for p in proposals] == ["zigzag", "spiral", "wave", "hatching"]
    assert proposals[0]["reasoning"] == "try zigzag" and proposals[0]["source"] == "scripted"
    initial = len({c for ls in json.loads((session.out / "state.json").read_text())["latents"].values()
                   for c in ls["scored"]} - {"zigzag", "spiral", "wave", "hatching"})  # fmt: skip
    assert images.images == (initial + 4) * CONFIG["n_images"]  # a proposal shared by both latents: drawn once
    assert json.loads((session.out / "params.json").read_text())["proposer"] == "scripted"


def test_tiny_llama_proposes_inside_the_loop(sae_dir, tmp_path, tiny_model_dir):  # noqa: F811
    from sae_lab.backends.text import make_backend

    llm = make_backend(f"hf:{tiny_model_dir}", device="cpu", dtype="float32", local_files_only=True)
    calls = []
    original = llm.generate
    llm.generate = lambda requests: calls.append(len(requests)) or original(requests)
    lines, session = run(tmp_path / "run", sae_dir, latents=[1, 2], cfg=config(n_iters=1), llm=llm,
                         image_backend=RendererBackend(32), proposer_opts={"max_retries": 1, "max_new_tokens": 6})  # fmt: skip
    assert calls == [2, 2, 2, 2]  # (1 iteration + summary) × (answer + 1 retry), both latents per call
    proposals = [json.loads(x) for x in (session.out / "1/proposals.jsonl").read_text().splitlines()]
    assert len(proposals) == 2 and all(p["fallback"] and p["raw"] is not None for p in proposals)
    assert all(r["best_concept"] for r in lines)


def test_latent_parsing_and_the_gt_rate():
    assert parse_latents("0-3, 7,5") == [0, 1, 2, 3, 5, 7]
    for bad in ("", "a-b", "5-2"):
        with pytest.raises(ValueError):
            parse_latents(bad)
    lines = [{"best_concept": "sun", "best_score": 0.8, "ground_truth": {"primitive": "spokes", "image_auc": 0.95}},
             {"best_concept": "ring", "best_score": 0.9, "ground_truth": {"primitive": "circle", "image_auc": 0.99}},
             {"best_concept": "wave", "best_score": 0.7, "ground_truth": {"primitive": "dots", "image_auc": 0.91}},
             {"best_concept": "wave", "best_score": 0.7, "ground_truth": {"primitive": "dots", "image_auc": 0.5}},
             {"best_concept": "wave", "best_score": 0.7, "ground_truth": None}]  # fmt: skip
    assert gt_named_rate(lines) == (2 / 3, 3)
    assert gt_named_rate(lines[3:]) == (None, 0)
    unscored = {"best_concept": "circle", "best_score": None, "ground_truth": {"primitive": "circle", "image_auc": 1}}
    assert gt_named_rate([unscored]) == (None, 0)  # a null score names nothing (issue 19, item 5)


def test_quickstart_block(sae_dir, tmp_path):
    block = run_line_stage(tmp_path / "run", sae_dir, latents=2, n_iters=1, n_images=2)
    assert set(block) == {"latents", "gt_named_rate", "images_generated", "seconds"} and block["latents"] == 2
    assert block["images_generated"] > 0 and (block["gt_named_rate"] is None or 0 <= block["gt_named_rate"] <= 1)
    lines = explain(tmp_path / "run", 2, sae_dir, LineConfig(n_iters=1, n_images=2), progress=False)
    assert lines == [json.loads(x) for x in (tmp_path / "run/line/summary.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------ the CLI
def cli_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["explain", "line", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "--latents" in out and "--images" in out and "--llm" in out


def test_kill_and_resume_gives_the_uninterrupted_result(sae_dir, tmp_path, capsys, monkeypatch):
    args = ["--sae", str(sae_dir), "--latents", "0,3", "--n-iters", "6", "--n-images", "2", "--n-control", "16"]
    ref_lines, ref = run(tmp_path / "ref", sae_dir, cfg=LineConfig(n_iters=6, n_images=2, n_control=16),
                         image_backend=RendererBackend(32))  # fmt: skip
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "sae_lab", "explain", "--run", str(run_dir), *args]
    proc = subprocess.Popen([*cmd, "--no-progress"], env=cli_env(), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    state_path = run_dir / "line/state.json"
    deadline = time.monotonic() + 120
    state = {}
    while time.monotonic() < deadline and proc.poll() is None:
        if state_path.is_file():
            state = json.loads(state_path.read_text())
            if state["iteration"] >= 1:
                break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    assert 1 <= state["iteration"] <= 6 and not state["done"]
    before = {p.name: p.stat().st_mtime_ns for p in (run_dir / "line/cache").glob("*.png")}

    monkeypatch.chdir(tmp_path)
    assert main(cmd[3:]) == 0  # started again (in this process, to save a start-up)
    assert "resuming after iteration" in capsys.readouterr().out
    after = {p.name: p.stat().st_mtime_ns for p in (run_dir / "line/cache").glob("*.png")}
    assert all(after[name] == mtime for name, mtime in before.items())  # nothing cached was drawn again
    assert set(after) == {p.name for p in (ref.out / "cache").glob("*.png")}  # and the same images overall
    lines = [json.loads(x) for x in (run_dir / "line/summary.jsonl").read_text().splitlines()]
    assert [(r["best_concept"], r["best_score"]) for r in lines] == [
        (r["best_concept"], r["best_score"]) for r in ref_lines
    ]
    for lat in LATENTS:
        got = (run_dir / f"line/{lat}/proposals.jsonl").read_text()
        assert got == (ref.out / f"{lat}/proposals.jsonl").read_text()


def test_cli_options_reach_the_image_backend():
    from sae_lab.commands import COMMANDS

    command = COMMANDS["explain"]
    base = ["line", "--run", "r", "--latents", "0-3"]
    settings = command.parse([*base, "--images", "diffusers:x", "--steps", "4", "--guidance", "2.5", "--width", "256"])
    opts = settings.image_options()
    assert (opts["steps"], opts["guidance"], opts["width"], opts["height"], opts["device"]) == (
        4,
        2.5,
        256,
        None,
        "auto",
    )
    assert command.parse([*base, "--images", "replicate:a/b", "--steps", "2"]).image_options() == {
        "steps": 2,
        "guidance": None,
    }
    assert command.parse(base).image_options() == {}
