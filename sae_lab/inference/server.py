"""``POST /why`` over HTTP with LitServe: the same JSON as ``why --json``, for a PNG/JPEG upload.

A request carries one image as a multipart form upload (field ``image`` or ``file``, or any file part), as JSON
``{"image": "<base64 or data: URL>", "name": "…"}``, or as the raw bytes of an ``image/*`` /
``application/octet-stream`` body. :class:`~sae_lab.inference.http_guard.WhyRequestMiddleware` checks and decodes
it in the HTTP process, before it is queued: a body over ``max_bytes`` → 413, a body not sent within
``body_timeout`` → 408, an image over ``max_pixels``, ``max_side`` or ``max_decode_bytes`` (checked from the
header, before decoding: decompression bombs never expand) → 413, an empty body, bad JSON or base64, or a file
that is not a complete PNG/JPEG → 400, another content type → 415, no answer within ``timeout`` → 504, each with
``{"detail": "…"}``. Only decoded ink tensors reach :class:`WhyAPI`, so one bad upload never fails the other
requests batched with it, and the inference worker never sees untrusted bytes. Multipart bodies are parsed with
the standard library (no ``python-multipart`` dependency). ``GET /health`` is LitServe's own (200 "ok" once every
worker has loaded the run, 503 while one is (re)starting). An inference worker that dies is started again by
LitServe's monitor (``restart_workers``).
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import tempfile
from pathlib import Path

import litserve as ls
import numpy as np
import torch

from sae_lab.inference.http_guard import WhyRequestMiddleware, request_deadline_protocol
from sae_lab.inference.upload import MAX_BYTES, MAX_DECODE_BYTES, MAX_PIXELS, MAX_SIDE, Limits

BODY_TIMEOUT = 10.0
"""Seconds a client has to send a request body once its headers arrived."""
DECODERS = 2
"""Uploads decoded at once in the HTTP process (each within its decode budget)."""
WORKER_START_FAILED = "workers failed to start"
"""LitServe's RuntimeError text when a worker's setup raised."""


# ------------------------------------------------------------------------------------------------ LitServe API
class WhyAPI(ls.LitAPI):
    """Loads the run in each inference worker; explains batches of decoded images.

    Args:
        run, sae, classifier: as :meth:`~sae_lab.inference.lab.SaeLab.load`.
        top: latents listed per answer.
        llm: optional text backend spec that rewords the sentence.
        explanations: explanation methods whose text labels a latent, in order of preference (None: the default).
        threads: torch CPU threads per worker (None: torch's default).
        image_size: side S of the ink tensors the middleware sends.
        error_file: where a worker whose setup fails writes the reason, for the main process to report.
    """

    def __init__(self, run=None, sae=None, classifier=None, *, top: int = 5, llm: str | None = None,
                 explanations: tuple[str, ...] | None = None, threads: int | None = None, image_size: int = 64,
                 error_file: str | None = None, **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        self.run, self.sae, self.classifier, self.top, self.llm = run, sae, classifier, top, llm
        self.explanations, self.threads, self.image_size = explanations, threads, image_size
        self.error_file = error_file
        self.lab = None

    def setup(self, device):
        from sae_lab.inference.lab import SaeLab

        try:
            if self.threads:
                torch.set_num_threads(self.threads)
            self.lab = SaeLab.load(self.run, sae=self.sae, classifier=self.classifier, device=device,
                                   text_backend=self.llm, explanations=self.explanations)  # fmt: skip
        except Exception as e:
            if self.error_file:  # the main process reports it as one line; LitServe's traceback would be noise
                Path(self.error_file).write_text(str(e) if isinstance(e, (ValueError, OSError)) else repr(e))
                logging.getLogger("litserve.loops.loops").disabled = True
            raise

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


class WhyServer:
    """A LitServer answering ``POST /why`` with its request guards; :meth:`run` serves until stopped.

    Args:
        server: the LitServer (its middleware already guards ``/why``).
        body_timeout: seconds a client has for a whole request; the connection-level deadline adds 1 s, so the
            middleware's 408 comes first for a stalled body.
        error_file: where a failing worker writes its reason.
    """

    def __init__(self, server: ls.LitServer, body_timeout: float, error_file: str):
        self.server, self.body_timeout, self.error_file = server, body_timeout, error_file

    def run(self, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
        """Serves until Ctrl+C / SIGTERM.

        Raises:
            ValueError: an inference worker could not load the run (the reason in one line).
        """
        try:
            self.server.run(host=host, port=port, generate_client_file=False, num_api_servers=1, log_level=log_level,
                            http=request_deadline_protocol(self.body_timeout + 1))  # fmt: skip
        except RuntimeError as e:
            if WORKER_START_FAILED not in str(e):
                raise
            reason = Path(self.error_file).read_text() if os.path.exists(self.error_file) else str(e)
            raise ValueError(f"the inference worker could not start: {reason}") from None
        finally:
            shutil.rmtree(os.path.dirname(self.error_file), ignore_errors=True)


def build_server(
    run=None,
    sae=None,
    classifier=None,
    *,
    top: int = 5,
    llm: str | None = None,
    explanations: tuple[str, ...] | None = None,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_side: int = MAX_SIDE,
    max_decode_bytes: int = MAX_DECODE_BYTES,
    body_timeout: float = BODY_TIMEOUT,
    decoders: int = DECODERS,
    max_batch_size: int = 8,
    batch_timeout: float = 0.005,
    workers: int = 1,
    threads: int | None = None,
    timeout: float = 60,
    accelerator: str = "cpu",
) -> WhyServer:
    """The ``POST /why`` server; the run is loaded once here first, so a bad run fails before any worker starts.

    Raises:
        FileNotFoundError, ValueError: as :meth:`~sae_lab.inference.lab.SaeLab.load`.
    """
    from sae_lab.inference.lab import SaeLab

    lab = SaeLab.load(run, sae=sae, classifier=classifier, explanations=explanations)
    paths, image_size = lab.paths, lab.image_size
    del lab
    error_file = os.path.join(tempfile.mkdtemp(prefix="sae_lab-serve-"), "worker-error.txt")  # written on failure
    api = WhyAPI(paths.run_dir, paths.sae_dir, paths.classifier, top=top, llm=llm, explanations=explanations,
                 threads=threads, image_size=image_size, error_file=error_file, max_batch_size=max_batch_size,
                 batch_timeout=batch_timeout, api_path="/why")  # fmt: skip
    limits = Limits(max_pixels=max_pixels, max_side=max_side, max_decode_bytes=max_decode_bytes)
    middleware = (WhyRequestMiddleware, {"path": "/why", "image_size": image_size, "max_bytes": max_bytes,
                                         "limits": limits, "body_timeout": body_timeout, "response_timeout": timeout,
                                         "decoders": decoders})  # fmt: skip
    server = ls.LitServer(api, accelerator=accelerator, devices=1, workers_per_device=workers, timeout=timeout,
                          middlewares=[middleware], restart_workers=True)  # fmt: skip
    return WhyServer(server, body_timeout, error_file)
