"""`python -m sae_lab serve`: the real LitServe app in a subprocess on loopback — uploads, 4xx, concurrency, a
stalled upload closed, a 16-bit picture over the decode budget refused, a killed worker restarted (issue 19, 10)."""

from __future__ import annotations

import base64
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from sae_lab.inference import SaeLab
from tests.helpers.common import REPO, TESTS, assert_latents_close
from tests.inference.test_lab import bomb_png, make_run, png_bytes, rgba_and_16bit, world_images

MAX_BYTES = 300_000
MAX_DECODE_BYTES = 2_000_000
"""A 16-bit 1200² picture (2.9 MB decoded) is over it; the 32² sketches are far below."""
BODY_TIMEOUT = 2.0
START_TIMEOUT = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run_dir(classifier_ckpt, tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("serve"), classifier_ckpt)


@pytest.fixture(scope="module")
def server(run_dir):
    """The server as a user starts it; stopped with SIGTERM (and its process group killed if it lingers)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "sae_lab", "serve", "--run", str(run_dir), "--port", str(port), "--threads", "1",
           "--max-bytes", str(MAX_BYTES), "--max-batch-size", "4", "--explanations", "labels",
           "--max-decode-bytes", str(MAX_DECODE_BYTES), "--body-timeout", str(BODY_TIMEOUT),
           "--timeout", "30"]  # fmt: skip
    log = open(run_dir / "serve.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(cmd, cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, timeout=60)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, (run_dir / "serve.log").read_text()
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become healthy:\n" + (run_dir / "serve.log").read_text()
            time.sleep(0.5)
        client.proc = proc
        yield client
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group we started: workers that outlived the server
        except ProcessLookupError:
            pass
        log.close()


@pytest.fixture(scope="module")
def sketch_png() -> bytes:
    return png_bytes(Image.fromarray(world_images(1, first=3)[0]))


def assert_answer(js: dict) -> None:
    assert {"image", "predicted", "top5", "latents", "sentence"} <= set(js)
    assert all(set(lat) == {"id", "activation", "contribution", "label"} for lat in js["latents"])
    assert abs(js["latent_sum"] + js["error_term"] + js["bias_term"] - js["logit"]) < 1e-4


def test_health(server):
    r = server.get("/health")
    assert r.status_code == 200 and r.text == "ok"


def test_multipart_base64_and_raw_uploads_answer_like_the_python_api(server, run_dir, sketch_png):
    expected = SaeLab.load(run_dir, explanations=["labels"]).why(sketch_png, names=["sketch.png"]).to_json()
    multipart = server.post("/why", files={"image": ("sketch.png", sketch_png, "image/png")})
    b64 = server.post("/why", json={"image": base64.b64encode(sketch_png).decode(), "name": "sketch.png"})
    data_url = server.post("/why", json={"image": "data:image/png;base64," + base64.b64encode(sketch_png).decode()})
    raw = server.post("/why", content=sketch_png, headers={"content-type": "image/png"})
    for r in (multipart, b64, data_url, raw):
        assert r.status_code == 200, r.text
        js = r.json()
        assert_answer(js)
        assert js["predicted"]["index"] == expected["predicted"]["index"]
        assert [lat["id"] for lat in js["latents"]] == [lat["id"] for lat in expected["latents"]]
        for got, want in zip(js["latents"], expected["latents"]):  # other thread counts: float32 rounding only
            assert got["contribution"] == pytest.approx(want["contribution"], abs=1e-4)
        assert abs(js["logit"] - expected["logit"]) < 1e-4
    assert multipart.json()["image"] == b64.json()["image"] == "sketch.png"
    labels = {lat["id"]: lat["label"] for lat in multipart.json()["latents"]}
    assert labels.get(0, "stats zero") == "stats zero"  # --explanations labels: not LINE's "line zero"
    assert [lat["label"] for lat in js["latents"]] == [lat["label"] for lat in expected["latents"]]


def test_rgba_16bit_and_jpeg_uploads_are_converted(server):
    sketch = world_images(1, first=5)[0]
    rgba, gray16 = rgba_and_16bit(sketch)
    answers = [server.post("/why", files={"file": ("x.png", png_bytes(img), "image/png")}) for img in (rgba, gray16)]
    jpeg = io.BytesIO()
    Image.fromarray(sketch).convert("RGB").save(jpeg, format="JPEG", quality=95)
    answers.append(server.post("/why", content=jpeg.getvalue(), headers={"content-type": "image/jpeg"}))
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert answers[2].json()["predicted"]["index"] == answers[0].json()["predicted"]["index"]
    assert_latents_close(answers[0].json()["latents"], answers[1].json()["latents"])  # same ink: same answer


def gif_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8), 255).save(buf, format="GIF")
    return buf.getvalue()


def big_16bit_png(side: int = 1200) -> bytes:
    """A 16-bit grey PNG: tiny compressed (flat paper), side² × 2 bytes decoded."""
    return png_bytes(Image.fromarray(np.full((side, side), 65535, np.uint16)))


BAD = {
    "not an image": (400, {"files": {"image": ("a.png", b"just some text", "image/png")}}, "not a PNG/JPEG image"),
    "a GIF": (400, {"content": "GIF", "headers": {"content-type": "image/gif"}}, "not a PNG/JPEG image"),
    "truncated png": (400, {"content": "TRUNCATED", "headers": {"content-type": "image/png"}}, "truncated"),
    "empty body": (400, {"content": b"", "headers": {"content-type": "image/png"}}, "empty request body"),
    "empty json": (400, {"content": b"", "headers": {"content-type": "application/json"}}, "empty request body"),
    "bomb": (413, {"content": "BOMB", "headers": {"content-type": "image/png"}}, "decompression bomb"),
    "16-bit over the decode budget": (
        413,
        {"content": "BIG16", "headers": {"content-type": "image/png"}},
        "image is 1200x1200 I;16 = 2.75 MiB decoded, over --max-decode-bytes 1.91 MiB",
    ),  # fmt: skip
    "body over the limit": (
        413,
        {"content": b"\0" * (MAX_BYTES + 1), "headers": {"content-type": "image/png"}},
        "over --max-bytes",
    ),  # fmt: skip
    "bad json": (400, {"content": b"{nope", "headers": {"content-type": "application/json"}}, "not valid JSON"),
    "json without image": (400, {"json": {"picture": "x"}}, "'image'"),
    "bad base64": (400, {"json": {"image": "%%%not base64%%%"}}, "base64"),
    "multipart without a file": (
        400,
        {"data": {"note": "hi"}, "files": {"other": ("", b"", "text/plain")}},
        "no file field",
    ),  # fmt: skip
    "wrong content type": (415, {"content": b"hello", "headers": {"content-type": "text/plain"}}, "content type"),
}
CONTENT = {"TRUNCATED": lambda png: png[: len(png) // 2], "BOMB": lambda png: bomb_png(),
           "BIG16": lambda png: big_16bit_png(), "GIF": lambda png: gif_bytes()}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_4xx_and_the_server_keeps_serving(server, sketch_png, case):
    status, kwargs, message = BAD[case]
    if kwargs.get("content") in CONTENT:
        kwargs = {**kwargs, "content": CONTENT[kwargs["content"]](sketch_png)}
    r = server.post("/why", **kwargs)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert message in detail
    assert not re.search(r"object at 0x|Traceback", detail)  # issue 19, 10: never <_io.BytesIO object at 0x…>
    ok = server.post("/why", files={"image": ("s.png", sketch_png, "image/png")})
    assert ok.status_code == 200
    assert server.get("/health").status_code == 200


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and the seconds that took."""
    sock.settimeout(limit)
    start, data = time.monotonic(), b""
    while chunk := sock.recv(4096):
        data += chunk
    return data, time.monotonic() - start


@pytest.mark.parametrize("stall", ["body", "headers"])
def test_a_stalled_upload_is_closed_within_the_body_timeout(server, sketch_png, stall):
    """Issue 19, 10: a client sends headers and part of the body (or part of the headers), then nothing."""
    port = server.base_url.port
    head = f"POST /why HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {MAX_BYTES}\r\n\r\n"
    sent = head.encode() + sketch_png[:100] if stall == "body" else b"POST /why HTTP/1.1\r\nHost: x\r\n"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(sent)
        data, seconds = read_until_closed(sock, limit=BODY_TIMEOUT + 10)
    if stall == "body":  # the middleware answers 408 and closes
        assert data.startswith(b"HTTP/1.1 408") and b"--body-timeout 2 s" in data, data
        assert BODY_TIMEOUT - 0.5 < seconds < BODY_TIMEOUT + 1.5
    else:  # stalled before any ASGI code runs: the connection-level deadline (body timeout + 1 s) closes it
        assert data == b""
        assert BODY_TIMEOUT < seconds < BODY_TIMEOUT + 2.5
    assert server.post("/why", files={"image": ("s.png", sketch_png, "image/png")}).status_code == 200


def test_eight_concurrent_clients_every_request_answered(server, sketch_png):
    images = [png_bytes(Image.fromarray(img)) for img in world_images(8, first=30)]
    sent, answered, failures = [0] * 8, [0] * 8, []
    stop = time.monotonic() + 4.0

    def client(i: int) -> None:
        with httpx.Client(base_url=str(server.base_url), timeout=60) as c:
            while time.monotonic() < stop:
                sent[i] += 1
                try:
                    r = c.post("/why", files={"image": (f"{i}.png", images[i], "image/png")})
                except httpx.HTTPError as e:
                    failures.append(repr(e))
                    continue
                if r.status_code == 200 and r.json()["image"] == f"{i}.png":
                    answered[i] += 1
                else:
                    failures.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert sum(sent) == sum(answered) >= 8


def process_tree(pid: int) -> dict[int, str]:
    """``{pid: command line}`` of every descendant of ``pid`` (Linux /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child in [p for p, pp in parents.items() if pp == parent]:
            try:
                tree[child] = (Path("/proc") / str(child) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            frontier.append(child)
    return tree


def inference_workers(pid: int) -> list[int]:
    """The LitServe inference workers under the server ``pid``: the processes multiprocessing spawned."""
    return [p for p, cmd in process_tree(pid).items() if "spawn_main" in cmd]


@pytest.mark.slow  # ~12 s: a new worker process imports torch and loads the run
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker through /proc")
def test_a_killed_inference_worker_is_restarted_and_the_service_answers_again(server, sketch_png):
    """Issue 19, 10: kill -9 of the inference worker used to take the whole service down. Last in this module."""
    (worker,) = inference_workers(server.proc.pid)
    os.kill(worker, signal.SIGKILL)
    deadline, answer = time.monotonic() + 120, None
    while time.monotonic() < deadline:
        try:
            answer = server.post("/why", files={"image": ("s.png", sketch_png, "image/png")}, timeout=60)
        except httpx.TransportError:
            answer = None
        if answer is not None and answer.status_code == 200:
            break
        time.sleep(0.5)
    assert answer is not None and answer.status_code == 200, answer and answer.text
    assert_answer(answer.json())
    assert server.proc.poll() is None
    assert [w for w in inference_workers(server.proc.pid) if w != worker]  # a new worker answered
    assert server.get("/health").status_code == 200
