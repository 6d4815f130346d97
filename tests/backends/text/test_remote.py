from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from sae_lab.backends.text import ChatRequest, GenerationResult
from sae_lab.backends.text.remote import RemoteBackend, RetryPolicy, Secret, TransientError, parse_retry_after, scrub


def test_backoff_doubles_with_bounded_jitter_and_cap():
    policy = RetryPolicy(backoff_s=1.0, max_backoff_s=5.0, jitter=0.25)
    for retry, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)]:
        delays = [policy.delay(retry) for _ in range(50)]
        assert all(0.75 * base <= d <= 1.25 * base for d in delays)
    assert len({policy.delay(1) for _ in range(20)}) > 1


def test_retry_after_wins_but_is_capped():
    policy = RetryPolicy(backoff_s=1.0, max_backoff_s=5.0)
    assert policy.delay(1, retry_after=0.0) == 0.0
    assert policy.delay(3, retry_after=2.5) == 2.5
    assert policy.delay(1, retry_after=3600) == 5.0


def test_invalid_policy():
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)


def test_parse_retry_after():
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "soon"}) is None
    future = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 < parse_retry_after({"Retry-After": future}) <= 30
    past = format_datetime(datetime.now(timezone.utc) - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"Retry-After": past}) == 0.0


def test_scrub_and_secret():
    assert scrub("token abc123 in abc123", ["abc123"]) == "token *** in ***"
    assert scrub("Authorization: Bearer xyz.789") == "Authorization: Bearer ***"
    assert scrub("key r8_AbCdEf123456 and sk-proj-abcdefghij") == "key *** and ***"
    secret = Secret("hunter2-secret")
    assert "hunter2" not in repr(secret) + str(secret) and secret.get() == "hunter2-secret"


class Flaky(RemoteBackend):
    """Fails transiently ``failures[prompt]`` times, raises for 'crash', else echoes."""

    name = "flaky"

    def __init__(self, failures: dict[str, int], **kwargs) -> None:
        super().__init__(**kwargs)
        self.failures = dict(failures)

    def _complete(self, request: ChatRequest) -> str:
        prompt = request.messages[-1]["content"]
        if prompt == "crash":
            raise KeyError("no such thing")
        if self.failures.get(prompt, 0) > 0:
            self.failures[prompt] -= 1
            raise TransientError("HTTP 503", retry_after=0.0)
        return prompt.upper()


@pytest.mark.parametrize("concurrency", [1, 4])
def test_batch_never_raises_and_keeps_order(concurrency):
    backend = Flaky({"b": 2, "c": 10}, concurrency=concurrency, retry=RetryPolicy(max_retries=3, backoff_s=0.0))
    results = backend.generate([ChatRequest.from_prompt(p) for p in ["a", "b", "c", "crash", "e"]])
    assert [r.text for r in results] == ["A", "B", None, None, "E"]
    assert [r.attempts for r in results] == [1, 3, 4, 1, 1]
    assert "gave up after 4 attempts" in results[2].error and "KeyError" in results[3].error
    assert backend.generate([]) == []
    assert isinstance(results[0], GenerationResult) and results[0].ok


def test_invalid_backend_options():
    with pytest.raises(ValueError):
        Flaky({}, concurrency=0)
    with pytest.raises(ValueError):
        Flaky({}, timeout_s=0)


def test_chat_request_validation():
    with pytest.raises(ValueError):
        ChatRequest(messages=[])
    with pytest.raises(ValueError):
        ChatRequest(messages=[{"role": "robot", "content": "x"}])
    with pytest.raises(ValueError):
        ChatRequest(messages=[{"role": "user"}])
    with pytest.raises(ValueError):
        ChatRequest.from_prompt("x", max_new_tokens=0)
    with pytest.raises(ValueError):
        ChatRequest.from_prompt("x", temperature=-1)
