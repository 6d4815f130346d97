"""The labeller on synthetic runs: offline end to end, resumability, the file's repair, retries, and the real
``replicate`` / OpenAI-compatible clients against loopback servers (the fakes of ``tests/llm/llm_fakes.py``)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sae_lab.backends.text import ChatRequest, GenerationResult, TextBackend, parse_stats_block  # noqa: E402
from sae_lab.backends.text.remote import RetryPolicy  # noqa: E402
from sae_lab.explainers.labels import LABELS, LabelStore, label_run, parse_latents, run_labels  # noqa: E402
from sae_lab.explainers.labels.run import refresh_index  # noqa: E402
from tests.backends.text.llm_fakes import FakeServer, Recorded, Reply  # noqa: E402

NUM_LATENTS = 8
DEAD = (6,)
GROUND_TRUTH = {1: ("spokes", 0.95), 2: ("circle", 0.6), 4: ("zigzag", 0.85)}
TILE = 8
FAST_RETRY = RetryPolicy(max_retries=2, backoff_s=0.01, max_backoff_s=1.0)
REPLICATE_TOKEN = "r8_labelTestToken0123456789"
OPENAI_KEY = "sk-labeltest-0123456789abcdef"
KEY_ENV = "SAE_LAB_TEST_LLM_KEY"
CLASSES = ["sun", "wheel", "house", "clock", "fish"]


# ---------------------------------------------------------------- synthetic runs and fakes


def write_run(root: Path, num_latents: int = NUM_LATENTS, dead: Sequence[int] = DEAD, report: bool = True) -> Path:
    """A run folder shaped like the report stage's: neurons.jsonl, exemplar PNGs, sprites and report.json."""
    run = root / "run"
    rng = np.random.default_rng(0)
    records = []
    for i in range(num_latents):
        top = [
            {"class": CLASSES[(i + j) % 5], "index": (i + j) % 5, "S": 2.0 - j, "pmi": 1.0 - 0.3 * j,
             "delta": -0.4 + 0.1 * j, "delta_measured": -0.38 + 0.1 * j, "w": 0.8 - 0.2 * j}
            for j in range(3)
        ]  # fmt: skip
        anti = [{"class": CLASSES[(i + 4) % 5], "index": (i + 4) % 5, "S": -1.5, "pmi": -0.8, "delta": 0.2, "w": -0.4}]
        gt = GROUND_TRUTH.get(i)
        exemplars = []
        if i not in dead:
            for rank in range(3):
                rel = f"exemplars/{i:05d}/{rank:02d}.png"
                (run / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (TILE, TILE, 3), dtype=np.uint8)).save(run / rel)
                exemplars.append({"image": rel, "id": rank, "z_max": 2.0 - rank, "label": 0, "class": "sun"})
            (run / "sprites").mkdir(exist_ok=True)
            Image.new("RGB", (3 * TILE, TILE), "white").save(run / f"sprites/{i:05d}.png")
        stats = {"latent": i, "frequency": 0.0 if i in dead else 0.01 * (i + 1), "image_frequency": 0.1,
                 "tau": 0.5, "n_on": 4, "monosemanticity": 0.6, "top_classes": top, "anti_classes": anti,
                 "ground_truth": {"primitive": gt[0], "auc": gt[1], "token_auc": 0.7} if gt else None}  # fmt: skip
        records.append(
            {
                "id": i,
                "dead": i in dead,
                "frequency": stats["frequency"],
                "top_classes": top,
                "anti_classes": anti,
                "monosemanticity": 0.6,
                "exemplars": exemplars,
                "sprite": None if i in dead else f"sprites/{i:05d}.png",
                "ground_truth": {"primitive": gt[0], "image_auc": gt[1], "token_auc": 0.7, "all": {gt[0]: gt[1]}}
                if gt
                else None,
                "stats_block": stats,
            }  # fmt: skip
        )
    run.mkdir(parents=True, exist_ok=True)
    (run / "neurons.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if report:
        (run / "report.json").write_text(json.dumps({"run": "synthetic", "num_latents": num_latents}))
    return run


def read_labels(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / LABELS).read_text().splitlines()]


def latent_of(text: str) -> int:
    """The latent a prompt is about, from its stats block."""
    return parse_stats_block(text)["latent"]


class Scripted(TextBackend):
    """An in-process backend answering ``answer(latent, n)`` (n counts that latent's requests, from 1)."""

    def __init__(self, answer: Callable[[int, int], str | None], name: str = "scripted:v1", images: bool = False):
        self.answer, self.name, self.accepts_images = answer, name, images
        self.requests: list[ChatRequest] = []
        self.counts: dict[int, int] = {}

    def generate(self, requests: Sequence[ChatRequest]) -> list[GenerationResult]:
        out = []
        for r in requests:
            self.requests.append(r)
            latent = latent_of(r.messages[1]["content"])
            self.counts[latent] = n = self.counts.get(latent, 0) + 1
            text = self.answer(latent, n)
            out.append(GenerationResult(text, None if text is not None else "HTTP 500", 1, 0.001))
        return out


def good(latent: int, n: int = 1) -> str:
    return f"**SHORT ANSWER:** concept {latent}\nEVIDENCE: request {n}"


def completion(text: str) -> dict:
    return {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}  # fmt: skip


class OpenAILike:
    """A chat-completions server whose answer per latent comes from ``script(latent, n) -> Reply | str``."""

    def __init__(self, script: Callable[[int, int], Reply | str] | None = None, delay: float = 0.0) -> None:
        self.script = script or (lambda latent, n: good(latent, n))
        self.delay = delay
        self.counts: dict[int, int] = {}
        self.lock = threading.Lock()

    def __call__(self, req: Recorded) -> Reply:
        content = req.body["messages"][1]["content"]
        text = content if isinstance(content, str) else content[0]["text"]
        latent = latent_of(text)
        with self.lock:
            self.counts[latent] = n = self.counts.get(latent, 0) + 1
        reply = self.script(latent, n)
        if isinstance(reply, str):
            return Reply(
                200, completion(reply.replace("{auth}", req.headers.get("Authorization", ""))), delay=self.delay
            )
        return reply


class ReplicateLike:
    """Replicate's prediction API (``Prefer: wait`` answered at once) with a per-latent ``script``."""

    def __init__(self, script: Callable[[int, int], Reply | str]) -> None:
        self.script = script
        self.counts: dict[int, int] = {}
        self.lock = threading.Lock()

    def __call__(self, req: Recorded) -> Reply:
        if req.method != "POST" or not req.path.endswith("/predictions"):
            return Reply(404, {"title": "Not found", "status": 404})
        data = req.body["input"]
        latent = latent_of(data["prompt"])
        with self.lock:
            self.counts[latent] = n = self.counts.get(latent, 0) + 1
        reply = self.script(latent, n)
        if not isinstance(reply, str):
            return reply
        text = reply.replace("{auth}", req.headers.get("Authorization", ""))
        prediction = {"id": f"p{latent}x{n}", "model": "acme/labeller", "version": "v1", "status": "succeeded",
                      "input": data, "output": [text[:5], text[5:]], "logs": "", "error": None, "metrics": {},
                      "created_at": "2025-01-01T00:00:00Z", "urls": {"get": "/v1/predictions/p", "cancel": "/c"}}  # fmt: skip
        return Reply(201, prediction)


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch):
    """httpx honours proxy variables; loopback traffic must not go through one."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("REPLICATE_BASE_URL", raising=False)


@pytest.fixture
def server():
    """Factory: ``server(handler)`` starts a loopback server that is shut down after the test."""
    started: list[FakeServer] = []

    def start(handler: Callable[[Recorded], Reply]) -> FakeServer:
        started.append(FakeServer(handler))
        return started[-1]

    yield start
    for s in started:
        s.close()


@pytest.fixture
def run(tmp_path) -> Path:
    return write_run(tmp_path)


LIVE = [i for i in range(NUM_LATENTS) if i not in DEAD]


# ---------------------------------------------------------------- offline, end to end


def test_offline_labels_every_live_latent(run):
    block = run_labels(run, "offline", progress=False)
    assert set(block) == {"labelled", "failed", "seconds"}
    assert block["labelled"] == len(LIVE) and block["failed"] == 0
    rows = read_labels(run)
    assert [r["latent"] for r in rows] == LIVE
    for r in rows:
        assert set(r) == {"latent", "label", "evidence", "source", "prompt_hash", "status", "error", "attempts",
                          "seconds"}  # fmt: skip
        assert r["status"] == "ok" and r["error"] is None and r["source"] == "offline:stats" and r["attempts"] == 1
        assert len(r["label"].split()) <= 12 and r["evidence"].startswith("offline:") and len(r["prompt_hash"]) == 64
    by_latent = {r["latent"]: r["label"] for r in rows}
    assert by_latent[1] == "spokes" and by_latent[4] == "zigzag"  # ground truth with AUC ≥ 0.8
    assert "circle" not in by_latent[2]  # AUC 0.6: named from its classes instead
    if (run / "index.html").exists():  # the report stage's renderer is present
        assert "zigzag" in (run / "index.html").read_text()


def test_labels_speak_the_explanation_schema(run):
    from sae_lab.run import ExplanationStore

    run_labels(run, "offline", progress=False)
    labels = {r["latent"]: r for r in read_labels(run)}
    explained = ExplanationStore(run, "labels").latest()
    assert sorted(explained) == sorted(labels)
    for latent, rec in explained.items():
        assert rec.method == "labels" and rec.text == labels[latent]["label"]
        assert [(t.concept, t.weight) for t in rec.terms] == [(rec.text, 1.0)] and rec.bias is None
        assert rec.cost.llm_calls == labels[latent]["attempts"] and rec.backends == {"llm": "offline:stats"}
    run_labels(run, "offline", progress=False)  # a re-run rewrites, never duplicates
    lines = (run / "explanations" / "labels.jsonl").read_text().splitlines()
    assert len(lines) == len(labels)


def test_dead_latents_and_subsets(run):
    label_run(run, "offline", latents="5-7", include_dead=True, progress=False)
    assert [r["latent"] for r in read_labels(run)] == [5, 6, 7]
    label_run(run, "offline", latents=[0], progress=False)
    assert [r["latent"] for r in read_labels(run)] == [0, 5, 6, 7]
    with pytest.raises(ValueError, match="choose no latent to label.*--include-dead"):  # dead only: nothing to do
        label_run(run, "offline", latents="6", progress=False)
    assert [r["latent"] for r in read_labels(run)] == [0, 5, 6, 7]


@pytest.mark.parametrize(("spec", "ids"), [("0-3,7", [0, 1, 2, 3, 7]), (" 5 ", [5]), ("2-2,1,1", [1, 2])])
def test_parse_latents(spec, ids):
    assert parse_latents(spec) == ids


@pytest.mark.parametrize("spec", ["", "3-1", "a", "1-", "-2", "1,,2", "0-x"])
def test_parse_latents_rejects(spec):
    with pytest.raises(ValueError, match="bad latent range"):
        parse_latents(spec)


def test_bad_inputs(tmp_path, run):
    with pytest.raises(FileNotFoundError, match=r"neurons\.jsonl.*report"):
        run_labels(tmp_path / "nowhere", progress=False)
    with pytest.raises(ValueError, match="unknown LLM backend spec"):
        run_labels(run, "gpt-9000", progress=False)
    with pytest.raises(ValueError, match="bad latent range"):
        run_labels(run, latents="9-3", progress=False)
    with pytest.raises(ValueError, match="not in neurons.jsonl: 99"):
        run_labels(run, latents="0,99", progress=False)
    with pytest.raises(ValueError, match="does not take"):
        run_labels(run, "offline", progress=False, backend_opts={"accepts_images": True})
    with pytest.raises(ValueError, match="concurrency"):
        run_labels(run, concurrency=0, progress=False)
    assert not (run / LABELS).exists()


# ---------------------------------------------------------------- resuming


def test_rerun_skips_up_to_date_and_relabels_what_changed(run):
    first = Scripted(good)
    assert label_run(run, first, progress=False).requested == len(LIVE)
    again = Scripted(good)
    outcome = label_run(run, again, progress=False)
    assert outcome.reused == len(LIVE) and outcome.requested == 0 and not again.requests

    lines = (run / "neurons.jsonl").read_text().splitlines()
    changed = json.loads(lines[3])
    changed["stats_block"]["monosemanticity"] = 0.9  # a changed prompt → relabelled
    lines[3] = json.dumps(changed)
    (run / "neurons.jsonl").write_text("\n".join(lines) + "\n")
    third = Scripted(good)
    assert label_run(run, third, progress=False).requested == 1 and set(third.counts) == {3}

    other = Scripted(good, name="scripted:v2")  # another backend → everything relabelled
    assert label_run(run, other, progress=False).requested == len(LIVE)
    rows = read_labels(run)
    assert [r["latent"] for r in rows] == LIVE and {r["source"] for r in rows} == {"scripted:v2"}
    assert label_run(run, Scripted(good, name="scripted:v2"), overwrite=True, progress=False).requested == len(LIVE)


def test_failed_latents_are_retried_and_old_ok_line_wins(run):
    flaky = Scripted(lambda latent, n: None if latent == 2 else good(latent))
    outcome = label_run(run, flaky, progress=False)
    assert outcome.failed == 1 and outcome.labelled == len(LIVE) - 1
    assert {r["latent"]: r["status"] for r in read_labels(run)}[2] == "failed"
    fixed = Scripted(good)
    assert label_run(run, fixed, progress=False).requested == 1 and set(fixed.counts) == {2}
    assert all(r["status"] == "ok" for r in read_labels(run))
    broken = Scripted(lambda latent, n: None, name="scripted:v3")  # a new backend that fails everything
    assert label_run(run, broken, latents=[2], progress=False).failed == 1
    [row] = [r for r in read_labels(run) if r["latent"] == 2]
    assert row["status"] == "ok" and row["source"] == "scripted:v1"  # last ok line wins in the compacted file


def test_store_repairs_tail_and_compacts(tmp_path):
    path = tmp_path / LABELS
    ok = {"latent": 1, "label": "a", "status": "ok", "prompt_hash": "h1"}
    lines = [ok, {"latent": 2, "status": "failed"}, {**ok, "label": "b"}, {"latent": 1, "status": "failed"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"latent": 3, "lab')
    store = LabelStore(path)
    assert store.repaired_bytes == len('{"latent": 3, "lab') and path.read_text().endswith("}\n")
    store.append({"latent": 2, "label": "c", "status": "ok"})
    assert store.compact() == 2
    assert [json.loads(line)["label"] for line in path.read_text().splitlines()] == ["b", "c"]
    path.write_text(path.read_text() + json.dumps({"latent": 4, "label": "d", "status": "ok"}))  # whole, no newline
    assert LabelStore(path).repaired_bytes == 0 and set(LabelStore(path).latest()) == {1, 2, 4}
    path.write_text("not json\n" + json.dumps(ok) + "\n")
    assert LabelStore(path).compact() == 1 and path.read_text() == json.dumps(ok, separators=(",", ":")) + "\n"


# ---------------------------------------------------------------- answers, images


def test_malformed_answers_are_retried_then_failed(run):
    answers = {
        0: lambda n: "I believe this is a circle.",  # never the format
        1: lambda n: "SHORT ANSWER: " + "very " * 12 + "round",  # always too long
        2: lambda n: "no idea" if n == 1 else good(2, n),  # fixed by the retry
    }
    backend = Scripted(lambda latent, n: answers.get(latent, lambda n: good(latent, n))(n))
    outcome = label_run(run, backend, latents="0-3", max_retries=2, progress=False)
    assert (outcome.labelled, outcome.failed) == (2, 2)
    rows = {r["latent"]: r for r in read_labels(run)}
    assert rows[0]["status"] == "failed" and "no SHORT ANSWER" in rows[0]["error"] and rows[0]["attempts"] == 3
    assert "too long (13 words > 12)" in rows[1]["error"] and rows[1]["label"] is None
    assert rows[2]["label"] == "concept 2" and rows[2]["evidence"] == "request 2" and rows[2]["attempts"] == 2
    assert rows[3]["attempts"] == 1
    retry = [r for r in backend.requests if latent_of(r.messages[1]["content"]) == 2][1]
    assert [m["role"] for m in retry.messages] == ["system", "user", "assistant", "user"]
    assert retry.messages[2]["content"] == "no idea" and retry.temperature > 0 and retry.seed == 1


def test_images_go_to_backends_that_take_them(run):
    seeing = Scripted(good, images=True)
    label_run(run, seeing, latents="0,1", progress=False)
    request = seeing.requests[0]
    [image] = request.images
    assert isinstance(image, Image.Image) and image.width == 2 * TILE + 2  # 3 tiles: a 2 × 2 grid, captioned
    assert "attached image" in request.messages[1]["content"]
    hashes = {r["latent"]: r["prompt_hash"] for r in read_labels(run)}
    blind = Scripted(good, images=True)
    label_run(run, blind, latents="0,1", images=False, progress=False)  # another prompt → relabelled
    assert not blind.requests[0].images and "attached image" not in blind.requests[0].messages[1]["content"]
    assert all(r["prompt_hash"] != hashes[r["latent"]] for r in read_labels(run))
    assert label_run(run, Scripted(good), latents="0,1", progress=False).reused == 2  # the same text-only prompt
    text_only = Scripted(good, name="scripted:text")
    label_run(run, text_only, latents="0", progress=False)
    assert not text_only.requests[0].images


# ---------------------------------------------------------------- remote clients on loopback


def test_replicate_client_success_429_500_and_malformed(run, server, monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", REPLICATE_TOKEN)

    def script(latent: int, n: int) -> Reply | str:
        if latent == 2 and n == 1:
            return Reply(429, {"title": "Too Many Requests", "status": 429}, {"Retry-After": "0.05"})
        if latent == 3:
            return Reply(500, {"title": "Internal Server Error", "status": 500})
        if latent == 4:
            return "Looks like zigzags to me."
        return good(latent, n)

    fake = ReplicateLike(script)
    url = server(fake).url
    opts = {"base_url": url, "retry": FAST_RETRY}
    outcome = label_run(run, "replicate:acme/labeller", max_retries=2, progress=False, backend_opts=opts)
    rows = {r["latent"]: r for r in read_labels(run)}
    assert (outcome.labelled, outcome.failed) == (len(LIVE) - 2, 2)
    assert rows[0]["label"] == "concept 0" and rows[0]["source"] == "replicate:acme/labeller"
    assert rows[2]["status"] == "ok" and rows[2]["attempts"] == 2  # 429, then success
    assert rows[3]["status"] == "failed" and "HTTP 500" in rows[3]["error"] and rows[3]["attempts"] == 3
    assert rows[4]["status"] == "failed" and "no SHORT ANSWER" in rows[4]["error"] and fake.counts[4] == 3
    assert all(rows[i]["status"] == "ok" for i in (0, 1, 5, 7))


def test_openai_compatible_backend_with_images(run, server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, OPENAI_KEY)
    fake = server(OpenAILike())
    opts = {"api_key_env": KEY_ENV, "accepts_images": True, "retry": FAST_RETRY}
    outcome = label_run(run, f"openai:tiny-vlm@{fake.url}/v1", latents="0-2", progress=False, backend_opts=opts)
    assert outcome.labelled == 3
    body = fake.requests[0].body
    assert body["model"] == "tiny-vlm" and body["temperature"] == 0 and body["messages"][0]["role"] == "system"
    parts = body["messages"][1]["content"]
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert fake.requests[0].headers["Authorization"] == f"Bearer {OPENAI_KEY}"
    assert {r["source"] for r in read_labels(run)} == {f"openai:tiny-vlm@{fake.url}/v1"}


@pytest.mark.parametrize("kind", ["replicate", "openai"])
def test_tokens_appear_in_no_file_and_no_log(run, server, monkeypatch, caplog, capsys, kind):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("REPLICATE_API_TOKEN", REPLICATE_TOKEN)
    monkeypatch.setenv(KEY_ENV, OPENAI_KEY)

    def script(latent: int, n: int) -> Reply | str:
        if latent == 0:  # an error quoting the auth header
            return Reply(422, {"title": "Invalid", "detail": "rejected {auth}", "status": 422, "error": "bad {auth}"})
        if latent == 1:  # a model that repeats the header back
            return "SHORT ANSWER: {auth}\nEVIDENCE: saw {auth}"
        if latent == 2:
            return "no format, just {auth}"
        return good(latent, n)

    def echo(latent: int, n: int) -> Reply | str:
        reply = script(latent, n)
        if isinstance(reply, Reply):
            secret = REPLICATE_TOKEN if kind == "replicate" else OPENAI_KEY
            reply.body = json.loads(json.dumps(reply.body).replace("{auth}", f"Bearer {secret}"))
        return reply

    if kind == "replicate":
        fake, spec, opts = server(ReplicateLike(echo)), "replicate:acme/labeller", {}
        opts["base_url"] = fake.url
    else:
        fake = server(OpenAILike(echo))
        spec, opts = f"openai:tiny@{fake.url}/v1", {"api_key_env": KEY_ENV}
    opts["retry"] = FAST_RETRY
    label_run(run, spec, max_retries=1, backend_opts=opts)
    rows = {r["latent"]: r for r in read_labels(run)}
    assert rows[0]["status"] == "failed" and "422" in rows[0]["error"]
    assert rows[1]["status"] == "ok" and "***" in rows[1]["label"]  # the label survives, the token does not
    assert rows[2]["status"] == "failed"
    assert any(r.headers.get("Authorization", "").endswith(REPLICATE_TOKEN if kind == "replicate" else OPENAI_KEY)
               for r in fake.requests)  # fmt: skip
    captured = capsys.readouterr()
    texts = [caplog.text, captured.out, captured.err, *(r.getMessage() for r in caplog.records)]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in run.rglob("*") if p.is_file()]
    for text in texts:
        assert REPLICATE_TOKEN not in text and OPENAI_KEY not in text


def test_remote_latents_are_labelled_concurrently(tmp_path, server):
    n, delay = 24, 0.2
    run = write_run(tmp_path, num_latents=n, dead=())
    refresh_index(run)  # warm the report renderer's imports so that they are not timed
    fake = server(OpenAILike(delay=delay))
    start = time.monotonic()
    outcome = label_run(run, f"openai:tiny@{fake.url}/v1", concurrency=8, progress=False)
    wall = time.monotonic() - start
    sequential = sum(r["seconds"] for r in read_labels(run))
    assert outcome.labelled == n and sequential >= n * delay
    assert wall < 0.5 * sequential, (wall, sequential)
