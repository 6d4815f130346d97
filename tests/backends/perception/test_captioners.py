"""BLIP captions from a tiny random checkpoint, and Replicate captions through the real client against a fake API."""

import base64
import io
import logging
import threading

import numpy as np
import pytest
from PIL import Image

from sae_lab.backends.perception import make_captioner
from sae_lab.backends.perception.captioners import MAX_NEW_TOKENS, BlipCaptioner
from sae_lab.backends.text.remote import RetryPolicy
from tests.backends.perception.annotated import probe_images
from tests.backends.text.llm_fakes import FakeServer, Recorded, Reply
from tests.helpers.threads import one_thread  # noqa: F401

TOKEN = "r8_secret_test_token_for_captions"
MODEL = "acme/captioner"


def test_blip_captions_and_cache(tiny_blip, tmp_path):
    captioner = make_captioner(f"hf:{tiny_blip}", cache_dir=tmp_path, device="cpu", batch_size=2)
    assert isinstance(captioner, BlipCaptioner) and "max_new_tokens=32" in captioner.identity
    images = probe_images(3)
    captions = captioner.caption(images + images[:1])
    assert len(captions) == 4 and all(isinstance(c, str) for c in captions) and captions[3] == captions[0]
    assert all(len(c.split()) <= MAX_NEW_TOKENS for c in captions)
    assert captioner.counters() == {"captions": 3, "cache_hits": 0, "failures": 0}
    again = make_captioner(f"hf:{tiny_blip}", cache_dir=tmp_path, device="cpu")
    assert again.caption(images) == captions[:3] and again.counters()["cache_hits"] == 3
    with pytest.raises(ValueError, match="max_new_tokens"):
        make_captioner(f"hf:{tiny_blip}", cache_dir=tmp_path, max_new_tokens=33)


def test_blip_gives_none_for_the_image_that_fails(tiny_blip, tmp_path, monkeypatch):
    captioner = make_captioner(f"hf:{tiny_blip}", cache_dir=tmp_path, device="cpu", batch_size=4)
    generate = captioner._generate

    def fragile(images):
        if any(im.size == (3, 3) for im in images):
            raise RuntimeError("bad image")
        return generate(images)

    monkeypatch.setattr(captioner, "_generate", fragile)
    images = probe_images(2)
    captions = captioner.caption([images[0], Image.new("L", (3, 3)), images[1]])
    assert captions[1] is None and isinstance(captions[0], str) and isinstance(captions[2], str)
    assert captioner.counters() == {"captions": 2, "cache_hits": 0, "failures": 1}
    assert captioner.caption([Image.new("L", (3, 3))]) == [None] and captioner.failures == 2  # failures not cached


class FakeCaptionAPI:
    """Replicate's prediction API for an image-to-text model: the caption names the image's size. A 9-pixel-wide
    image is rate-limited once, a 5-pixel-wide one always fails with HTTP 500."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.posts: list[dict] = []

    def __call__(self, req: Recorded) -> Reply:
        if req.method != "POST" or not req.path.endswith("/predictions"):
            return Reply(404, {"title": "Not found", "status": 404})
        data = req.body["input"]
        header, _, payload = data["image"].partition(",")
        image = Image.open(io.BytesIO(base64.b64decode(payload)))
        with self.lock:
            self.posts.append(data)
            seen = sum(p["image"] == data["image"] for p in self.posts)
        width, height = image.size
        if width == 9 and seen == 1:
            return Reply(429, {"title": "Too Many Requests", "status": 429}, {"Retry-After": "0.05"})
        if width == 5:
            return Reply(500, {"title": "Internal Server Error", "status": 500})
        pid = f"p{len(self.posts)}"
        prediction = {"id": pid, "model": MODEL, "version": "v1", "status": "succeeded", "input": data,
                      "output": f"Caption: a {image.mode} image of {width}x{height}", "logs": "", "error": None,
                      "metrics": {}, "created_at": "2025-01-01T00:00:00Z",
                      "urls": {"get": f"/v1/predictions/{pid}", "cancel": f"/v1/predictions/{pid}/cancel"}}  # fmt: skip
        assert header == "data:image/png;base64"
        return Reply(201, prediction)


@pytest.fixture
def fake_api():
    api = FakeCaptionAPI()
    server = FakeServer(api)
    yield api, server
    server.close()


def test_replicate_captions_retries_and_cache(fake_api, tmp_path, monkeypatch, caplog):
    api, server = fake_api
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    retry = RetryPolicy(max_retries=2, backoff_s=0.01, max_backoff_s=0.1)
    captioner = make_captioner(f"replicate:{MODEL}", cache_dir=tmp_path, base_url=server.url, retry=retry,
                               extra_input={"task": "image_captioning"}, poll_interval_s=0.01)  # fmt: skip
    rgba = Image.new("RGBA", (9, 4), (0, 0, 0, 0))
    images = [Image.new("L", (12, 7), 255), rgba, Image.new("RGB", (5, 5))]
    with caplog.at_level(logging.DEBUG):
        captions = captioner.caption(images)
    assert captions == ["a RGB image of 12x7", "a RGB image of 9x4", None]  # sent as RGB; the 429 retried
    assert captioner.counters() == {"captions": 2, "cache_hits": 0, "failures": 1}
    assert all(set(p) == {"image", "task"} and p["task"] == "image_captioning" for p in api.posts)
    assert server.requests[0].path == f"/v1/models/{MODEL}/predictions"
    assert server.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in caplog.text and "HTTP 500" in caplog.text
    posts = len(api.posts)
    assert captioner.caption(images[:2]) == captions[:2] and len(api.posts) == posts
    assert captioner.cache_hits == 2 and 'input={"task": "image_captioning"}' in captioner.identity


def test_replicate_needs_a_token_and_a_model(monkeypatch):
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    with pytest.raises(ValueError, match="REPLICATE_API_TOKEN"):
        make_captioner("replicate:acme/x")
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    with pytest.raises(ValueError, match="owner/name"):
        make_captioner("replicate:nonsense")
    for spec in ("blip", "hf:", "replicate:", "offline:x"):
        with pytest.raises(ValueError, match=r"expected offline \| hf:<BLIP"):
            make_captioner(spec)


def test_captioner_bad_input(tmp_path):
    captioner = make_captioner("offline")
    with pytest.raises(TypeError, match="not a PIL image"):
        captioner.caption([np.zeros((3, 3))])
    assert captioner.caption([]) == []
