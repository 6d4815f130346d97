"""The Replicate image backend against a loopback fake (predictions API and PNGs served over HTTP)."""

from __future__ import annotations

import io
import json
import re
import threading

import numpy as np
import pytest

from sae_lab.backends.image import RendererBackend, ReplicateImageBackend, make_image_backend
from sae_lab.backends.text.remote import RetryPolicy
from tests.explainers.line.line_fixtures import no_proxies  # noqa: F401 (autouse: loopback traffic skips proxies)
from tests.helpers.common import QuietHandler, serve_on_loopback
from tests.helpers.threads import one_thread  # noqa: F401

SIZE = 32
PROMPTS = ["a simple line drawing of a spiral", "a simple line drawing of a star", "a simple line drawing of a cat"]


class FakeReplicateImages:
    """Replicate's predictions API plus a file host on one loopback server; answers 429 to the first POST and
    makes predictions whose prompt contains 'slow' finish on the second poll."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.posts: list[dict] = []
        self.predictions: dict[str, dict] = {}
        self.polls: dict[str, int] = {}
        self.files: dict[str, bytes] = {}
        fake = self

        class Handler(QuietHandler):
            def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.posts.append({"path": self.path, "auth": self.headers.get("Authorization"), **data})
                    first = len(fake.posts) == 1
                    pid = f"p{len(fake.predictions)}"
                if first:
                    return self._send(429, b'{"title":"Too Many Requests","status":429}', "application/json",
                                      {"Retry-After": "0"})  # fmt: skip
                inp = data["input"]
                png = io.BytesIO()
                RendererBackend(SIZE).generate([inp["prompt"]], [inp["seed"]])[0].save(png, format="PNG")
                fake.files[pid] = png.getvalue()
                slow = "slow" in inp["prompt"]
                pred = fake.prediction(pid, inp, "starting" if slow else "succeeded")
                fake.predictions[pid] = pred
                self._send(201, json.dumps(pred).encode(), "application/json")

            def do_GET(self) -> None:
                if m := re.fullmatch(r"/files/(\w+)\.png", self.path):
                    return self._send(200, fake.files[m[1]], "image/png")
                pid = self.path.rsplit("/", 1)[-1]
                with fake.lock:
                    fake.polls[pid] = fake.polls.get(pid, 0) + 1
                    if fake.polls[pid] >= 2:
                        fake.predictions[pid].update(status="succeeded", output=[fake.url + f"/files/{pid}.png"])
                self._send(200, json.dumps(fake.predictions[pid]).encode(), "application/json")

        self.httpd, self.url = serve_on_loopback(Handler)

    def prediction(self, pid: str, inp: dict, status: str) -> dict:
        output = [f"{self.url}/files/{pid}.png"] if status == "succeeded" else None
        return {"id": pid, "model": "acme/t2i", "version": "v1", "status": status, "input": inp, "output": output,
                "logs": "", "error": None, "metrics": {}, "created_at": "2025-01-01T00:00:00Z",
                "urls": {"get": f"/v1/predictions/{pid}", "cancel": f"/v1/predictions/{pid}/cancel"}}  # fmt: skip


@pytest.fixture
def fake_replicate():
    fake = FakeReplicateImages()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


def test_replicate_images_are_fetched_through_the_client(fake_replicate, monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_test_token_123456")
    backend = ReplicateImageBackend("acme/t2i", base_url=fake_replicate.url, steps=4, concurrency=1,
                                    retry=RetryPolicy(max_retries=2, backoff_s=0.01), poll_interval_s=0.01)  # fmt: skip
    prompts = [PROMPTS[0], PROMPTS[1] + " slow"]
    images = backend.generate(prompts, [11, 12])
    expected = RendererBackend(SIZE).generate(prompts, [11, 12])
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, expected))
    first, *rest = fake_replicate.posts
    assert first["path"] == "/v1/models/acme/t2i/predictions" and len(rest) == 2  # the 429 was retried
    assert rest[0]["input"] == {"prompt": PROMPTS[0], "seed": 11, "num_outputs": 1, "output_format": "png",
                                "num_inference_steps": 4}  # fmt: skip
    assert rest[0]["auth"] == "Bearer r8_test_token_123456"
    assert fake_replicate.polls == {"p1": 2}  # the slow one was polled until done
    assert "replicate:acme/t2i" in backend.identity
    backend.close()


def test_replicate_needs_a_token(monkeypatch):
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    with pytest.raises(ValueError, match="REPLICATE_API_TOKEN"):
        make_image_backend("replicate:acme/t2i")
