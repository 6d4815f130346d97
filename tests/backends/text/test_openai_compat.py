import base64
import io
import logging
import threading
import time

import pytest
from PIL import Image

from sae_lab.backends.text import ChatRequest
from sae_lab.backends.text.openai_compat import OpenAICompatBackend
from sae_lab.backends.text.remote import RetryPolicy
from tests.backends.text.llm_fakes import Recorded, Reply

FAST_RETRY = RetryPolicy(max_retries=2, backoff_s=0.01, max_backoff_s=2.0)
API_KEY = "sk-test-secret-key-123456"


def completion(text: str) -> dict:
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
    }


class Scripted:
    """Answers by the prompt's content: 'ratelimit' → 429 once, 'broken' → 500 always, 'garbage' → bad JSON."""

    def __init__(self, delay: float = 0.0, retry_after: str = "0") -> None:
        self.delay = delay
        self.retry_after = retry_after
        self.seen: dict[str, int] = {}
        self.lock = threading.Lock()

    def __call__(self, req: Recorded) -> Reply:
        if req.path != "/v1/chat/completions":
            return Reply(404, {"error": "not found"})
        content = req.body["messages"][-1]["content"]
        prompt = content if isinstance(content, str) else content[0]["text"]
        with self.lock:
            self.seen[prompt] = n = self.seen.get(prompt, 0) + 1
        if "ratelimit" in prompt and n == 1:
            return Reply(429, {"error": "slow down"}, {"Retry-After": self.retry_after})
        if "broken" in prompt:
            return Reply(500, {"error": "boom"})
        if "garbage" in prompt:
            return Reply(200, "{not json")
        if "echo-auth" in prompt:
            return Reply(400, {"error": f"bad request from {req.headers.get('Authorization')}"})
        return Reply(200, completion(f"echo {prompt}"), delay=self.delay)


def backend(url: str, **kwargs) -> OpenAICompatBackend:
    kwargs.setdefault("retry", FAST_RETRY)
    return OpenAICompatBackend("tiny-model", f"{url}/v1", **kwargs)


def test_success_sends_chat_completions_body(fake_server):
    server = fake_server(Scripted())
    with backend(server.url) as llm:
        request = ChatRequest.from_prompt("hello", system="be brief", max_new_tokens=7, temperature=0.5, seed=3)
        [result] = llm.generate([request])
    assert result.ok and result.text == "echo hello" and result.attempts == 1
    body = server.requests[0].body
    assert body["model"] == "tiny-model"
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (7, 0.5, 3)
    assert "Authorization" not in server.requests[0].headers


def test_429_then_success_honours_retry_after(fake_server):
    server = fake_server(Scripted(retry_after="1"))
    llm = backend(server.url)
    start = time.monotonic()
    [result] = llm.generate([ChatRequest.from_prompt("ratelimit me")])
    assert result.text == "echo ratelimit me" and result.attempts == 2
    assert time.monotonic() - start >= 0.95  # waited for Retry-After: 1, not the 0.01 s back-off


def test_repeated_500_fails_only_that_request(fake_server):
    server = fake_server(Scripted())
    llm = backend(server.url)
    prompts = ["first", "broken server", "ratelimit", "last"]
    results = llm.generate([ChatRequest.from_prompt(p) for p in prompts])
    assert [r.text for r in results] == ["echo first", None, "echo ratelimit", "echo last"]
    failed = results[1]
    assert "HTTP 500" in failed.error and failed.attempts == FAST_RETRY.max_retries + 1
    assert sum(r.path == "/v1/chat/completions" for r in server.requests) == 1 + 3 + 2 + 1


def test_malformed_json_is_an_error_not_an_exception(fake_server):
    server = fake_server(Scripted())
    results = backend(server.url).generate([ChatRequest.from_prompt("garbage please"), ChatRequest.from_prompt("ok")])
    assert results[0].text is None and "malformed" in results[0].error and results[0].attempts == 1
    assert results[1].text == "echo ok"


def test_timeout_is_retried_then_reported(fake_server):
    server = fake_server(Scripted(delay=1.0))
    llm = backend(server.url, timeout_s=0.2, retry=RetryPolicy(max_retries=1, backoff_s=0.01))
    [result] = llm.generate([ChatRequest.from_prompt("slow")])
    assert result.text is None and "timeout" in result.error and result.attempts == 2


def test_connection_refused_is_reported():
    llm = OpenAICompatBackend("m", "http://127.0.0.1:9/v1", retry=RetryPolicy(max_retries=1, backoff_s=0.01))
    [result] = llm.generate([ChatRequest.from_prompt("anyone?")])
    assert result.text is None and "connection error" in result.error and result.attempts == 2


def test_images_sent_as_data_url_parts(fake_server):
    server = fake_server(Scripted())
    llm = backend(server.url, accepts_images=True)
    image = Image.new("L", (8, 8), color=255)
    [result] = llm.generate([ChatRequest.from_prompt("describe", images=[image, image])])
    assert result.ok
    content = server.requests[0].body["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "describe"}
    assert [p["type"] for p in content[1:]] == ["image_url", "image_url"]
    url = content[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (8, 8)


def test_images_dropped_with_warning_when_not_accepted(fake_server, caplog):
    server = fake_server(Scripted())
    [result] = backend(server.url).generate([ChatRequest.from_prompt("describe", images=[Image.new("L", (4, 4))])])
    assert result.ok and server.requests[0].body["messages"][-1]["content"] == "describe"
    assert "does not accept images" in caplog.text


def test_api_key_from_env_is_used_and_never_shown(fake_server, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("MY_KEY", API_KEY)
    server = fake_server(Scripted())
    llm = backend(server.url, api_key_env="MY_KEY")
    results = llm.generate([ChatRequest.from_prompt("hi"), ChatRequest.from_prompt("echo-auth")])
    assert server.requests[0].headers["Authorization"] == f"Bearer {API_KEY}"
    assert results[0].ok and results[1].error and "HTTP 400" in results[1].error
    for text in (repr(llm), str(llm), repr(vars(llm)), results[1].error, caplog.text):
        assert API_KEY not in text


def test_missing_api_key_env_raises(monkeypatch):
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    with pytest.raises(ValueError, match="NOT_SET_KEY"):
        OpenAICompatBackend("m", "http://127.0.0.1:1/v1", api_key_env="NOT_SET_KEY")


def test_bad_base_url_raises():
    with pytest.raises(ValueError, match="http"):
        OpenAICompatBackend("m", "localhost:8000")


def test_concurrent_requests_overlap(fake_server):
    delay, n = 0.3, 8
    server = fake_server(Scripted(delay=delay))
    llm = backend(server.url, concurrency=n)
    start = time.monotonic()
    results = llm.generate([ChatRequest.from_prompt(f"p{i}") for i in range(n)])
    wall = time.monotonic() - start
    assert [r.text for r in results] == [f"echo p{i}" for i in range(n)]
    assert wall < 0.5 * n * delay
