"""The real ``replicate`` client against a fake Replicate API on loopback."""

import base64
import io
import logging
import re
import threading
import time

import pytest
from PIL import Image

from sae_lab.backends.text import ChatRequest
from sae_lab.backends.text.remote import RetryPolicy
from sae_lab.backends.text.replicate_backend import DEFAULT_MODEL, ReplicateBackend
from tests.backends.text.llm_fakes import Recorded, Reply

TOKEN = "r8_secret_test_token"
FAST_RETRY = RetryPolicy(max_retries=2, backoff_s=0.01, max_backoff_s=2.0)


class FakeReplicate:
    """Predictions scripted by the prompt: 'ratelimit' (429 once), 'broken' (500), 'poll' (done after 2 polls),
    'never' (never done), 'hang' (POST stalls), 'model-fails', 'echo-auth' (422 quoting the auth header)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.seen: dict[str, int] = {}
        self.predictions: dict[str, dict] = {}
        self.polls: dict[str, int] = {}
        self.cancelled: list[str] = []

    def prediction(self, pid: str, prompt_input: dict, status: str, output=None, error=None) -> dict:
        return {
            "id": pid,
            "model": DEFAULT_MODEL,
            "version": "v1",
            "status": status,
            "input": prompt_input,
            "output": output,
            "logs": "",
            "error": error,
            "metrics": {},
            "created_at": "2025-01-01T00:00:00Z",
            "urls": {"get": f"/v1/predictions/{pid}", "cancel": f"/v1/predictions/{pid}/cancel"},
        }

    def __call__(self, req: Recorded) -> Reply:
        cancel = re.fullmatch(r"/v1/predictions/(\w+)/cancel", req.path)
        if req.method == "POST" and cancel:
            with self.lock:
                self.cancelled.append(cancel[1])
                self.predictions[cancel[1]]["status"] = "canceled"
            return Reply(200, self.predictions[cancel[1]])
        get = re.fullmatch(r"/v1/predictions/(\w+)", req.path)
        if req.method == "GET" and get:
            return self.poll(get[1])
        if req.method == "POST" and req.path.endswith("/predictions"):
            return self.create(req)
        return Reply(404, {"title": "Not found", "status": 404})

    def create(self, req: Recorded) -> Reply:
        data = req.body["input"]
        prompt = data["prompt"]
        with self.lock:
            self.seen[prompt] = n = self.seen.get(prompt, 0) + 1
            pid = f"p{len(self.predictions)}"
        if "ratelimit" in prompt and n == 1:
            return Reply(429, {"title": "Too Many Requests", "status": 429}, {"Retry-After": "0.3"})
        if "broken" in prompt:
            return Reply(500, {"title": "Internal Server Error", "status": 500})
        if "echo-auth" in prompt:
            return Reply(
                422, {"title": "Invalid", "detail": f"rejected {req.headers.get('Authorization')}", "status": 422}
            )
        if "hang" in prompt:
            return Reply(201, self.prediction(pid, data, "succeeded", ["late"]), delay=3.0)
        if "model-fails" in prompt:
            return Reply(201, self.prediction(pid, data, "failed", error="CUDA out of memory"))
        if "poll" in prompt or "never" in prompt:
            self.predictions[pid] = self.prediction(pid, data, "starting")
            return Reply(201, self.predictions[pid])
        return Reply(201, self.prediction(pid, data, "succeeded", ["echo ", prompt]), delay=self.delay)

    def poll(self, pid: str) -> Reply:
        with self.lock:
            self.polls[pid] = n = self.polls.get(pid, 0) + 1
            p = self.predictions[pid]
            if p["status"] != "canceled":
                done = "poll" in p["input"]["prompt"] and n >= 2
                p["status"] = "succeeded" if done else "processing"
                p["output"] = ["echo ", p["input"]["prompt"]] if done else ["echo "]
        return Reply(200, p)


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    return TOKEN


def backend(url: str, **kwargs) -> ReplicateBackend:
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("poll_interval_s", 0.02)
    return ReplicateBackend(base_url=url, **kwargs)


def test_success_posts_model_prediction_with_prefer_wait(fake_server, token):
    server = fake_server(FakeReplicate())
    llm = backend(server.url, timeout_s=30)
    request = ChatRequest.from_prompt("hello", system="be brief", max_new_tokens=9, temperature=0.7, seed=5)
    [result] = llm.generate([request])
    assert result.ok and result.text == "echo hello" and result.attempts == 1
    sent = server.requests[0]
    assert sent.path == f"/v1/models/{DEFAULT_MODEL}/predictions"
    assert sent.headers["Prefer"] == "wait=30"
    assert sent.headers["Authorization"] == f"Bearer {token}"
    assert sent.body["input"] == {
        "prompt": "hello",
        "system_prompt": "be brief",
        "max_tokens": 9,
        "temperature": 0.7,
        "seed": 5,
    }


def test_version_ref_posts_to_predictions(fake_server, token):
    server = fake_server(FakeReplicate())
    [result] = backend(server.url, model="acme/llm:abc123").generate([ChatRequest.from_prompt("v")])
    assert result.text == "echo v"
    assert server.requests[0].path == "/v1/predictions" and server.requests[0].body["version"] == "abc123"


def test_multi_turn_becomes_transcript(token):
    llm = ReplicateBackend(base_url="http://127.0.0.1:1")
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    data = llm.model_input(ChatRequest(messages=messages))
    assert data["prompt"] == "user: a\nassistant: b\nuser: c\nassistant:" and "system_prompt" not in data


def test_polls_until_succeeded(fake_server, token):
    server = fake_server(FakeReplicate())
    [result] = backend(server.url).generate([ChatRequest.from_prompt("poll me")])
    assert result.text == "echo poll me" and result.attempts == 1
    assert [r.method for r in server.requests] == ["POST", "GET", "GET"]


def test_batch_with_429_500_and_model_failure(fake_server, token):
    server = fake_server(FakeReplicate())
    llm = backend(server.url)
    prompts = ["ok one", "ratelimit", "broken", "model-fails", "ok two"]
    start = time.monotonic()
    results = llm.generate([ChatRequest.from_prompt(p) for p in prompts])
    assert [r.text for r in results] == ["echo ok one", "echo ratelimit", None, None, "echo ok two"]
    assert results[1].attempts == 2 and results[1].seconds >= 0.29  # waited for Retry-After: 0.3
    assert "HTTP 500" in results[2].error and results[2].attempts == FAST_RETRY.max_retries + 1
    assert "CUDA out of memory" in results[3].error and results[3].attempts == 1
    assert time.monotonic() - start < 2.0


def test_prediction_past_timeout_is_cancelled_and_retried(fake_server, token):
    fake = FakeReplicate()
    server = fake_server(fake)
    llm = backend(server.url, timeout_s=0.3, retry=RetryPolicy(max_retries=1, backoff_s=0.01))
    [result] = llm.generate([ChatRequest.from_prompt("never")])
    assert result.text is None and "timeout" in result.error and result.attempts == 2
    assert len(fake.cancelled) == 2


def test_stalled_post_times_out(fake_server, token):
    server = fake_server(FakeReplicate())
    llm = backend(server.url, timeout_s=0.4, retry=RetryPolicy(max_retries=0))
    start = time.monotonic()
    [result] = llm.generate([ChatRequest.from_prompt("hang")])
    assert result.text is None and "timeout" in result.error and result.attempts == 1
    assert time.monotonic() - start < 2.5  # Prefer: wait=1 → read timeout 1.5 s, not the 3 s stall


def test_images_sent_as_data_urls(fake_server, token):
    server = fake_server(FakeReplicate())
    llm = backend(server.url, accepts_images=True)
    [result] = llm.generate([ChatRequest.from_prompt("describe", images=[Image.new("L", (6, 6), 128)])])
    assert result.ok
    url = server.requests[0].body["input"]["image"]
    assert url.startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (6, 6)


def test_token_never_leaks(fake_server, token, caplog):
    caplog.set_level(logging.DEBUG)
    server = fake_server(FakeReplicate())
    llm = backend(server.url)
    results = llm.generate([ChatRequest.from_prompt("echo-auth"), ChatRequest.from_prompt("ratelimit x")])
    assert "HTTP 422" in results[0].error and results[1].ok
    assert server.requests[0].headers["Authorization"] == f"Bearer {token}"  # the token is used
    for text in (repr(llm), str(llm), repr(vars(llm)), results[0].error, caplog.text):
        assert token not in text
    assert all(token not in r.getMessage() for r in caplog.records)


def test_missing_token_raises(monkeypatch):
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    with pytest.raises(ValueError, match="REPLICATE_API_TOKEN"):
        ReplicateBackend()


@pytest.mark.parametrize("ref", ["llama", "a/b/c", "/b", "a/", "a/b:"])
def test_bad_model_ref_raises(token, ref):
    with pytest.raises(ValueError, match="owner/name"):
        ReplicateBackend(ref)


def test_concurrent_predictions_overlap(fake_server, token):
    delay, n = 0.3, 8
    server = fake_server(FakeReplicate(delay=delay))
    llm = backend(server.url, concurrency=n)
    start = time.monotonic()
    results = llm.generate([ChatRequest.from_prompt(f"p{i}") for i in range(n)])
    wall = time.monotonic() - start
    assert [r.text for r in results] == [f"echo p{i}" for i in range(n)]
    assert wall < 0.5 * n * delay
