"""``POST /why`` over HTTP with LitServe: the same JSON as ``why --json``, for a PNG/JPEG upload.

A request carries one image as a multipart form upload (field ``image`` or ``file``, or any file part), as JSON
``{"image": "<base64 or data: URL>", "name": "…"}``, or as the raw bytes of an ``image/*`` /
``application/octet-stream`` body. :class:`WhyRequestMiddleware` checks and decodes it in the HTTP process,
before it is queued: a body over ``max_bytes`` → 413, an image over ``max_pixels`` or ``max_side`` (checked from
the header, before decoding: decompression bombs never expand) → 413, an empty body, bad JSON or base64, or a
file that is not a complete image → 400, another content type → 415, each with ``{"detail": "…"}``. Only decoded
ink tensors reach :class:`WhyAPI`, so one bad upload never fails the other requests batched with it, and the
inference worker never sees untrusted bytes. Multipart bodies are parsed with the standard library (no
``python-multipart`` dependency). ``GET /health`` is LitServe's own (200 "ok" once the worker has loaded the run).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import warnings
from email import policy
from email.parser import BytesParser
from typing import Any

import litserve as ls
import numpy as np
import torch
from PIL import Image

from sae_lab.data.images import ImageDecodeError, image_to_tensor, open_image

MAX_BYTES = 10 * 1024 * 1024
"""Largest request body (10 MiB)."""
MAX_PIXELS = 16_000_000
"""Largest image (width × height) the server decodes; a TU-Berlin sketch is 1111² ≈ 1.2 M."""
MAX_SIDE = 8192
"""Largest image width or height."""
FILE_FIELDS = ("image", "file")
"""Multipart field names looked for first."""
USAGE = 'send one PNG/JPEG as a multipart field \'image\', as JSON {"image": "<base64>"}, or as a raw image/* body'


class RequestError(Exception):
    """A request the server refuses, with its HTTP status."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


# ------------------------------------------------------------------------------------------------ request parsing
def _multipart_image(body: bytes, content_type: str) -> tuple[bytes, str | None]:
    if "boundary=" not in content_type:
        raise RequestError(400, "multipart body without a boundary parameter")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    msg = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not msg.is_multipart():
        raise RequestError(400, "malformed multipart body")
    parts = [p for p in msg.iter_parts() if p.get_content_disposition() == "form-data"]
    by_name = {p.get_param("name", header="content-disposition"): p for p in parts}
    part = next((by_name[n] for n in FILE_FIELDS if n in by_name), None)
    part = part or next((p for p in parts if p.get_filename()), None)
    if part is None:
        raise RequestError(400, f"the multipart upload has no file field ('image' or 'file'); {USAGE}")
    data = part.get_payload(decode=True)
    return (data if isinstance(data, bytes) else b""), part.get_filename()


def _json_image(body: bytes) -> tuple[bytes, str | None]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(400, f"the body is not valid JSON: {e}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
        raise RequestError(400, f"JSON body needs a string field 'image' (base64 PNG/JPEG); {USAGE}")
    text = payload["image"]
    if text.startswith("data:"):  # a data: URL
        text = text.partition(",")[2]
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, "field 'image' is not valid base64") from None
    name = payload.get("name")
    return data, name if isinstance(name, str) else None


def extract_image(body: bytes, content_type: str) -> tuple[bytes, str | None]:
    """The image bytes (and the client's name for it, if any) of a ``POST /why`` body.

    Raises:
        RequestError: 400 for an empty or malformed body, 415 for an unsupported content type.
    """
    if not body:
        raise RequestError(400, f"empty request body; {USAGE}")
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        data, name = _multipart_image(body, content_type)
    elif ctype == "application/json" or ctype.endswith("+json"):
        data, name = _json_image(body)
    elif ctype in ("", "application/octet-stream") or ctype.startswith("image/"):
        data, name = body, None
    else:
        raise RequestError(415, f"unsupported content type {ctype!r}; {USAGE}")
    if not data:
        raise RequestError(400, "the uploaded image is empty")
    return data, name


def decode_upload(data: bytes, image_size: int, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> torch.Tensor:
    """Image bytes → (1, S, S) ink; the size is checked from the header before any pixel is decoded.

    Raises:
        RequestError: 413 for an image over the limits, 400 for anything that is not a complete image.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
    except Image.DecompressionBombError as e:
        raise RequestError(413, f"image too large: {e}") from None
    except Exception as e:  # PIL raises many types for bad data
        raise RequestError(400, f"not a readable image: {type(e).__name__}: {e}") from None
    if width * height > max_pixels or max(width, height) > max_side:
        raise RequestError(
            413, f"image is {width}x{height} pixels; the limits are {max_pixels} pixels and {max_side} per side"
        )
    try:
        return image_to_tensor(open_image(data, max_pixels), image_size)
    except ImageDecodeError as e:
        raise RequestError(400, str(e)) from None
    except Exception as e:  # an exotic mode that cannot be converted
        raise RequestError(400, f"cannot convert the image: {type(e).__name__}: {e}") from None


class WhyRequestMiddleware:
    """ASGI middleware for ``POST <path>``: enforces the limits, decodes the image and hands LitServe a JSON body
    ``{"name", "ink"}`` (ink: base64 float32 (1, S, S)); answers refused requests itself with 4xx."""

    def __init__(self, app, *, path: str, image_size: int, max_bytes: int, max_pixels: int, max_side: int):
        self.app, self.path, self.image_size = app, path.rstrip("/"), image_size
        self.max_bytes, self.max_pixels, self.max_side = max_bytes, max_pixels, max_side

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise RequestError(413, f"request body of {declared} bytes; the limit is {self.max_bytes}")
            body = bytearray()
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                if len(body) > self.max_bytes:
                    raise RequestError(413, f"request body over the limit of {self.max_bytes} bytes")
                if not message.get("more_body"):
                    break
            data, name = extract_image(bytes(body), headers.get("content-type", ""))
            ink = await asyncio.to_thread(decode_upload, data, self.image_size, self.max_pixels, self.max_side)
        except RequestError as e:
            await _send_json(send, e.status, {"detail": e.detail})
            return
        payload = json.dumps({"name": name or "upload", "ink": base64.b64encode(ink.numpy().tobytes()).decode()})
        payload = payload.encode()
        keep = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"content-type", b"content-length")]
        scope = {**scope, "headers": [*keep, (b"content-type", b"application/json"),
                                      (b"content-length", str(len(payload)).encode())]}  # fmt: skip
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": payload, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _send_json(send, status: int, obj: Any) -> None:
    body = json.dumps(obj).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------------------------------------ LitServe API
class WhyAPI(ls.LitAPI):
    """Loads the run in each inference worker; explains batches of decoded images.

    Args:
        run, sae, classifier: as :meth:`~sae_lab.inference.lab.SaeLab.load`.
        top: latents listed per answer.
        llm: optional text backend spec that rewords the sentence.
        threads: torch CPU threads per worker (None: torch's default).
    """

    def __init__(self, run=None, sae=None, classifier=None, *, top: int = 5, llm: str | None = None,
                 threads: int | None = None, image_size: int = 64, **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        self.run, self.sae, self.classifier, self.top, self.llm = run, sae, classifier, top, llm
        self.threads, self.image_size = threads, image_size
        self.lab = None

    def setup(self, device):
        from sae_lab.inference.lab import SaeLab

        if self.threads:
            torch.set_num_threads(self.threads)
        self.lab = SaeLab.load(self.run, sae=self.sae, classifier=self.classifier, device=device,
                               text_backend=self.llm)  # fmt: skip

    def decode_request(self, request):
        ink = np.frombuffer(base64.b64decode(request["ink"]), dtype=np.float32)
        return str(request["name"]), torch.from_numpy(ink.copy()).view(1, self.image_size, self.image_size)

    def predict(self, x):
        single = isinstance(x, tuple)
        items = [x] if single else list(x)
        whys = self.lab.why([t for _, t in items], names=[n for n, _ in items], top=self.top)
        out = [w.to_json() for w in whys]
        return out[0] if single else out

    def encode_response(self, output):
        return output


def build_server(
    run=None,
    sae=None,
    classifier=None,
    *,
    top: int = 5,
    llm: str | None = None,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_side: int = MAX_SIDE,
    max_batch_size: int = 8,
    batch_timeout: float = 0.005,
    workers: int = 1,
    threads: int | None = None,
    timeout: float = 60,
    accelerator: str = "cpu",
) -> ls.LitServer:
    """A LitServer answering ``POST /why``; the run is loaded once here first, so a bad run fails at start.

    Raises:
        FileNotFoundError, ValueError: as :meth:`~sae_lab.inference.lab.SaeLab.load`.
    """
    from sae_lab.inference.lab import SaeLab

    lab = SaeLab.load(run, sae=sae, classifier=classifier)
    paths, image_size = lab.paths, lab.image_size
    del lab
    api = WhyAPI(paths.run_dir, paths.sae_dir, paths.classifier, top=top, llm=llm, threads=threads,
                 image_size=image_size, max_batch_size=max_batch_size, batch_timeout=batch_timeout,
                 api_path="/why")  # fmt: skip
    middleware = (WhyRequestMiddleware, {"path": "/why", "image_size": image_size, "max_bytes": max_bytes,
                                         "max_pixels": max_pixels, "max_side": max_side})  # fmt: skip
    return ls.LitServer(api, accelerator=accelerator, devices=1, workers_per_device=workers, timeout=timeout,
                        middlewares=[middleware])  # fmt: skip
