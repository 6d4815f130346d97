import pytest

from sae_lab.backends.text import OfflineBackend, make_backend
from sae_lab.backends.text.openai_compat import OpenAICompatBackend
from sae_lab.backends.text.replicate_backend import DEFAULT_MODEL, ReplicateBackend


@pytest.fixture(autouse=True)
def _token(monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_secret_test_token")


@pytest.mark.parametrize("spec", ["offline", "offline:stats", "  OFFLINE  "])
def test_offline(spec):
    assert isinstance(make_backend(spec), OfflineBackend)


def test_offline_options():
    assert make_backend("offline", min_gt_auc=0.9).min_gt_auc == 0.9


def test_replicate_default_and_explicit():
    assert make_backend("replicate").model == DEFAULT_MODEL
    backend = make_backend("replicate:acme/llm:abc", concurrency=3)
    assert isinstance(backend, ReplicateBackend) and backend.version == "abc" and backend.concurrency == 3


@pytest.mark.parametrize(
    ("spec", "model", "url"),
    [
        ("openai:tiny@http://127.0.0.1:8000/v1", "tiny", "http://127.0.0.1:8000/v1"),
        ("openai:llama3.2:3b@http://localhost:11434/v1/", "llama3.2:3b", "http://localhost:11434/v1"),
        ("openai:org/model@name@https://example.invalid/v1", "org/model@name", "https://example.invalid/v1"),
    ],
)
def test_openai(spec, model, url):
    backend = make_backend(spec)
    assert isinstance(backend, OpenAICompatBackend) and (backend.model, backend.base_url) == (model, url)


@pytest.mark.parametrize("spec", ["offline", "replicate", "replicate:acme/llm", "openai:m@http://127.0.0.1:1/v1"])
def test_name_is_a_spec(spec):
    backend = make_backend(spec)
    assert make_backend(backend.name).name == backend.name


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "unknown"),
        ("gpt4", "unknown"),
        ("offline:vocab", "unknown"),
        ("hf:", "hub id"),
        ("transformers:", "hub id"),
        ("replicate:", "owner/name"),
        ("replicate:llama", "owner/name"),
        ("openai:model", "openai:<model>@"),
        ("openai:model@localhost:8000", "openai:<model>@"),
        ("openai:@http://x", "openai:<model>@"),
    ],
)
def test_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        make_backend(spec)


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError):
        make_backend("offline", nonsense=1)
