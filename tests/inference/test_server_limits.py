"""`serve`'s request guards in process (issue 19, item 10): the decode budget refused from the header before any
pixel is decoded, strip-wise grey conversion identical to `why`'s, body and answer timeouts in the middleware, the
worker's start-up error as one line, and bad `serve` arguments as one `error:` line with exit code 2."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from sae_lab.__main__ import main
from sae_lab.commands.framework import SettingsCommand
from sae_lab.commands.serve import ServeSettings
from sae_lab.data.images import image_to_tensor, open_image, to_gray
from sae_lab.inference import server, upload
from sae_lab.inference.http_guard import WhyRequestMiddleware
from sae_lab.inference.upload import Limits, RequestError, decode_upload
from tests.helpers.threads import one_thread  # noqa: F401

SIZE = 32


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def sketch(h: int = 70, w: int = 90) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.full((h, w), 255, np.uint8)
    img[rng.integers(0, h, 400), rng.integers(0, w, 400)] = rng.integers(0, 120, 400)
    return img


def variants() -> dict[str, bytes]:
    s = sketch()
    rgba = np.zeros((*s.shape, 4), np.uint8)
    rgba[..., 3] = 255 - s
    pal = Image.fromarray(s).convert("P")
    pal.info["transparency"] = 0
    return {
        "L": encode(Image.fromarray(s)),
        "RGBA": encode(Image.fromarray(rgba, "RGBA")),
        "I;16": encode(Image.fromarray(s.astype(np.uint16) * 257)),
        "LA": encode(Image.fromarray(np.stack([s, 255 - s // 2], -1), "LA")),
        "1-bit": encode(Image.fromarray(s).convert("1")),
        "P with transparency": encode(pal, transparency=0),
        "JPEG": encode(Image.fromarray(s).convert("RGB"), "JPEG", quality=90),
    }


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "LA", "1-bit", "P with transparency", "JPEG"])
def test_strip_decoding_gives_exactly_the_ink_why_computes(mode):
    data = variants()[mode]
    want = image_to_tensor(open_image(data), SIZE)  # `why`'s path: whole-image to_gray
    for strip_bytes in (1, 8 * 90 * 7, upload.STRIP_BYTES):  # one row, 7 rows (a ragged last strip), one strip
        assert torch.equal(decode_upload(data, SIZE, strip_bytes=strip_bytes), want), strip_bytes


def test_a_picture_over_the_decode_budget_is_refused_before_any_pixel_is_decoded(monkeypatch):
    """Issue 19, 10: 16-bit 4000² PNGs (32 MB decoded each) took a server from 0.54 to 1.83 GB."""
    data = encode(Image.fromarray(np.full((4000, 4000), 65535, np.uint16)))
    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self.size))
    with pytest.raises(RequestError) as e:
        decode_upload(data, SIZE, Limits(max_decode_bytes=16 * 2**20))
    assert e.value.status == 413 and not loads  # refused from the header: PIL's decoder never ran
    assert e.value.detail == "image is 4000x4000 I;16 = 30.5 MiB decoded, over --max-decode-bytes 16 MiB"
    with pytest.raises(RequestError, match=r"^image is 4000x4000 = 16 Mpx, over --max-pixels 4 Mpx$"):
        decode_upload(data, SIZE, Limits(max_pixels=4_000_000))
    assert not loads


def test_a_16bit_picture_within_budget_decodes_in_bounded_memory():
    """Strip-wise conversion: the 16-bit image's float64 work stays per strip (to_gray on the whole image holds
    16+ bytes per pixel). tracemalloc traces numpy's allocations; PIL's own (the decoded 2 B/px, the 1 B/px grey
    result) are not traced and come beside them."""
    side = 1500
    img16 = np.zeros((side, side), np.uint16)
    img16[::7] = 40000
    data = encode(Image.fromarray(img16))

    def peak(fn) -> int:
        tracemalloc.start()
        try:
            fn()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    ours = peak(lambda: decode_upload(data, SIZE))
    whole = peak(lambda: to_gray(open_image(data)))
    assert ours < 3 * upload.STRIP_BYTES  # per strip, whatever the picture's size (2.2 MiB measured)
    assert whole > 10 * ours  # to_gray on the whole picture: 24 B/px, 51 MiB here


def scope(path: str = "/why", content_length: int | None = None) -> dict:
    headers = [(b"content-type", b"image/png")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    return {"type": "http", "method": "POST", "path": path, "headers": headers}


def call(middleware, receive, timeout: float = 10) -> tuple[list[dict], float]:
    """Runs the middleware on one request; the messages it sent and the seconds it took."""
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def go():
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.wait_for(middleware(scope(), receive, send), timeout)
        return loop.time() - start

    return sent, asyncio.run(go())


def guard(app=None, **kw) -> WhyRequestMiddleware:
    async def never_called(scope, receive, send):
        raise AssertionError("the request reached LitServe")

    opts = {"path": "/why", "image_size": SIZE, "max_bytes": 10**6, "limits": Limits(), "body_timeout": 0.3,
            "response_timeout": 0.3, "decoders": 1, **kw}  # fmt: skip
    return WhyRequestMiddleware(app or never_called, **opts)


def detail(sent: list[dict]) -> tuple[int, str, dict]:
    start, body = sent
    return start["status"], json.loads(body["body"])["detail"], dict(start["headers"])


def test_a_stalled_body_gets_408_and_the_connection_closed_within_the_body_timeout():
    async def stalled():
        if not getattr(stalled, "once", False):
            stalled.once = True
            return {"type": "http.request", "body": b"\x89PNG", "more_body": True}
        await asyncio.sleep(3600)  # the client sends nothing more

    sent, seconds = call(guard(), stalled)
    status, text, headers = detail(sent)
    assert (status, headers[b"connection"]) == (408, b"close")
    assert text == "request body not received within --body-timeout 0.3 s"
    assert 0.25 < seconds < 1.5


def test_no_answer_within_the_timeout_is_a_504_not_a_wait_forever():
    """A request held by a worker that was killed never gets LitServe's answer; the middleware ends it."""

    async def lost(scope, receive, send):
        await receive()
        await asyncio.sleep(3600)

    async def body():
        return {"type": "http.request", "body": encode(Image.fromarray(sketch())), "more_body": False}

    sent, seconds = call(guard(lost), body)
    status, text, _ = detail(sent)
    assert status == 504 and "--timeout 0.3 s" in text and "restarting" in text
    assert 0.25 < seconds < 1.5


def test_over_budget_upload_is_refused_by_the_middleware_before_decoding(monkeypatch):
    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self.size))
    data = encode(Image.fromarray(np.full((1200, 1200), 65535, np.uint16)))

    async def body():
        return {"type": "http.request", "body": data, "more_body": False}

    sent, _ = call(guard(limits=Limits(max_decode_bytes=2_000_000)), body)
    status, text, _ = detail(sent)
    assert status == 413 and "over --max-decode-bytes" in text and not loads


def test_a_worker_that_cannot_start_is_one_line(tmp_path):
    """WhyAPI.setup writes its reason; WhyServer.run turns LitServe's RuntimeError into a ValueError with it."""
    err = tmp_path / "err" / "worker-error.txt"
    err.parent.mkdir()
    api = server.WhyAPI(tmp_path / "no-run", error_file=str(err))
    with pytest.raises(FileNotFoundError):
        api.setup("cpu")
    reason = err.read_text()
    assert "no-run" in reason and "\n" not in reason.strip()

    class FailingLitServer:
        def run(self, **kw):
            assert kw["http"].request_deadline == 3.5  # body timeout + 1 s at the connection level
            raise RuntimeError("One or more workers failed to start. Shutting down LitServe")

    with pytest.raises(ValueError, match="^the inference worker could not start: .*no-run"):
        server.WhyServer(FailingLitServer(), 2.5, str(err)).run()
    assert not err.parent.exists()  # the temporary folder is cleaned


def test_stated_default_decode_budget_is_the_servers():
    help_text = {a.dest: a.help for a in SettingsCommand("h", ServeSettings, print).parser()._actions}
    assert "limit, 64 MiB)" in help_text["max_decode_bytes"] and upload.MAX_DECODE_BYTES == 64 * 2**20
    assert ServeSettings().body_timeout == server.BODY_TIMEOUT and ServeSettings().decoders == server.DECODERS


@pytest.fixture(scope="module")
def busy_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


BAD_ARGS = {
    "negative max bytes": (["--max-bytes", "-5"], "max_bytes must be >= 1, got -5"),
    "zero max pixels": (["--max-pixels", "0"], "max_pixels must be >= 1, got 0"),
    "zero decode budget": (["--max-decode-bytes", "0"], "max_decode_bytes must be >= 1"),
    "zero threads": (["--threads", "0"], "threads must be >= 1, got 0"),
    "zero body timeout": (["--body-timeout", "0"], "body_timeout must be > 0"),
    "privileged port": (["--port", "80"], "port must be in 1024..65535, got 80"),
    "port in use": (["--port", "BUSY"], "cannot listen on 127.0.0.1 port"),
    "unknown llm kind": (["--llm", "bogus"], "unknown LLM backend spec 'bogus'"),
    "openai without url": (["--llm", "openai:gpt"], "expected openai:<model>@<http(s)://base_url>"),
    "missing local llm": (["--llm", "hf:/nonexistent/model"], "'/nonexistent/model' not found"),
    "bad explanations": (["--explanations", "line,,Bad Name"], "explanations must be comma-separated"),
}


@pytest.mark.parametrize("case", list(BAD_ARGS))
def test_bad_serve_arguments_are_one_line_and_exit_2_before_anything_starts(case, busy_port, capsys, monkeypatch):
    """Issue 19, 10: these were accepted and failed only once the workers had started (a traceback)."""
    args, message = BAD_ARGS[case]
    args = [str(busy_port) if a == "BUSY" else a for a in args]
    monkeypatch.setattr(server, "build_server", lambda *a, **k: pytest.fail("the server was built"))
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err and "Traceback" not in err, err
