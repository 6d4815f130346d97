"""Secrets scrubbed by pattern as well as by value, wherever a spec, an error or a setting is recorded (issue 19,
item 6): a key inside the base URL, a key given to ``--api-key-env`` instead of a variable's name."""

from __future__ import annotations

import json
import logging

import pytest

from sae_lab.backends.text.stats_block import parse_stats_block
from sae_lab.run import Cost, ExplanationRecord, NeuronRecord, RunFiles
from sae_lab.run.secrets import ScrubFilter, check_env_name, looks_like_key, scrub, scrub_value
from sae_lab.run.store import write_neurons
from tests.backends.text.llm_fakes import Reply

KEY = "plainSecret42xyz"  # no known prefix: only the URL pattern or the value can catch it


@pytest.mark.parametrize(("text", "expected"), [
    (f"openai:m@http://u:{KEY}@host/v1", "openai:m@http://u:***@host/v1"),
    (f"https://{KEY}@host/v1/x", "https://***@host/v1/x"),
    ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
    ('{"Authorization": "Token abcdef"}', '{"Authorization": "***"}'.replace('"***"', '"Token ***"')),
    ("authorization=opaqueValue", "authorization=***"),
    ("key sk-proj-abcdefghij r8_AbCdEf123456 hf_abcdefghijklmnopqrstuv", "key *** *** ***"),
    ("GET https://h/x?api_key=abc&y=1", "GET https://h/x?api_key=***&y=1"),
    ("http://localhost:8000/v1 and hf:./models/tiny", "http://localhost:8000/v1 and hf:./models/tiny"),
])  # fmt: skip
def test_patterns_mask_what_looks_like_a_key_and_nothing_else(text, expected):
    assert scrub(text) == expected
    assert scrub(f"the {KEY} here", [KEY]) == "the *** here"  # by value too


def test_nested_values_and_log_records_are_scrubbed():
    value = {"llm": f"openai:m@http://u:{KEY}@h/v1", "list": [f"Bearer {KEY}"], "n": 3}
    assert scrub_value(value) == {"llm": "openai:m@http://u:***@h/v1", "list": ["Bearer ***"], "n": 3}
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "%s failed: %s", ("spec", f"http://a:{KEY}@h"), None)
    ScrubFilter().filter(record)
    assert KEY not in record.getMessage() and "http://a:***@h" in record.getMessage()


def test_explanation_backends_are_scrubbed_on_write_and_on_read():
    """DnD and patches record the specs as given (``s.llm``): the record itself scrubs them."""
    spec = f"openai:m@http://u:{KEY}@h/v1"
    rec = ExplanationRecord.single(1, "patches", "circle", backends={"llm": spec}, cost=Cost())
    assert KEY not in json.dumps(rec.to_json()) and rec.to_json()["backends"]["llm"] == "openai:m@http://u:***@h/v1"
    old = {**rec.to_json(), "backends": {"llm": spec}}  # a file written before the scrub
    assert KEY not in json.dumps(ExplanationRecord.from_json(old).backends)


def test_an_env_name_is_taken_and_a_key_refused_without_echo():
    assert check_env_name("OPENAI_API_KEY") == "OPENAI_API_KEY"
    assert not looks_like_key("MY_VERY_LONG_ENVIRONMENT_VARIABLE_NAME_X")
    for bad in ("sk-abc123def456ghi789", "aB3dE5gH7jK9mN1pQ3sT5", "has space"):
        with pytest.raises(ValueError, match="takes the NAME of an environment variable") as info:
            check_env_name(bad)
        assert bad not in str(info.value)


def tiny_run(tmp_path):
    run = tmp_path / "run"
    write_neurons(RunFiles(run).neurons, [NeuronRecord(latent=i, top_classes=[{"class": "sun", "S": 1.0}])
                                          for i in range(3)])  # fmt: skip
    return run


def test_a_key_in_the_base_url_reaches_no_record_warning_or_output(tmp_path, fake_server, cli):
    """The issue's reproduction: ``openai:m@http://u:KEY@host/v1``; one latent answered, one refused with a body
    quoting the URL, one a server error quoting the Authorization header."""

    def handler(req):
        latent = parse_stats_block(req.body["messages"][-1]["content"])["latent"]
        if "Authorization" not in req.headers:
            return Reply(401, {"error": "no credentials"})
        auth = req.headers["Authorization"]
        if latent == 1:
            return Reply(401, {"error": f"bad credentials for http://u:{KEY}@{req.headers.get('Host')}, {auth}"})
        text = "SHORT ANSWER: a sun\nEVIDENCE: rays"
        return Reply(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})

    fake = fake_server(handler)
    run = tiny_run(tmp_path)
    host = fake.url.split("://", 1)[1]
    spec = f"openai:m@http://u:{KEY}@{host}/v1"
    out = cli("explain", "labels", "--run", str(run), "--llm", spec, "--no-progress", "--max-retries", "0",
              cwd=tmp_path)  # fmt: skip
    assert any(r.headers.get("Authorization", "").startswith("Basic ") for r in fake.requests)  # the key was used
    assert out.returncode == 1, out.stderr  # one latent failed
    texts = [out.stdout, out.stderr] + [p.read_text(errors="replace") for p in run.rglob("*") if p.is_file()]
    assert all(KEY not in t for t in texts)
    labels = [json.loads(x) for x in RunFiles(run).labels.read_text().splitlines()]
    assert {r["source"] for r in labels} == {f"openai:m@http://u:***@{host}/v1"}
    assert "401" in next(r["error"] for r in labels if r["status"] == "failed")
    explained = [json.loads(x) for x in RunFiles(run).explanations("labels").read_text().splitlines()]
    assert {r["backends"]["llm"] for r in explained} == {f"openai:m@http://u:***@{host}/v1"}


def test_a_key_given_to_api_key_env_is_refused_and_not_printed(tmp_path, cli):
    key = "sk-abcdefghijklmnop0123456789"
    out = cli("explain", "labels", "--run", str(tiny_run(tmp_path)), "--llm", "openai:m@http://127.0.0.1:9/v1",
              "--api-key-env", key, "--no-progress", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--api-key-env takes the NAME of an environment variable; the value given looks like a key" in out.stderr
    assert key not in out.stderr + out.stdout and "sk-abc" not in out.stderr
