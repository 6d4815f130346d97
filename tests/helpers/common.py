"""Constants and paths the tests share (importable as `helpers.common`, unlike conftest modules)."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]
IMAGE_SIZE = 32
N_TRAIN = 144
N_TEST = 36


def assert_latents_close(a: list[dict], b: list[dict], tol: float = 1e-5) -> None:
    """Two `why` latent lists from different forward passes: the same latents and labels in the same order, the
    same numbers to float32 rounding (different batch shapes take different kernels)."""
    import pytest

    assert [(x["id"], x["label"]) for x in a] == [(y["id"], y["label"]) for y in b]
    for key in ("activation", "contribution"):
        assert [x[key] for x in a] == pytest.approx([y[key] for y in b], abs=tol), key


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that does not log each request to stderr."""

    def log_message(self, *args) -> None:
        pass


def serve_on_loopback(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    """Serves ``handler`` from a daemon thread on 127.0.0.1 (a free port); the server and its base URL.
    Stop it with ``server.shutdown(); server.server_close()``."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
