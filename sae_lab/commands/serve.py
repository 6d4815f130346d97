"""`python -m sae_lab serve`: ``POST /why`` (an image in, the `why --json` object out) and ``GET /health``.

Every argument is checked before any worker starts (values here, then :func:`check_start`: the port is free, the
``--llm`` spec is one the text backends take, the accelerator exists), so a mistake is one ``error:`` line and
exit code 2, never a worker that fails after start-up.
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass
from typing import Literal

from sae_lab.commands.why import METHOD_NAME
from sae_lab.errors import UsageError

HELP = "serve why over HTTP with LitServe: POST /why (PNG/JPEG upload or base64 JSON), GET /health"


@dataclass(frozen=True)
class ServeSettings:
    """The run whose SAE answers ``POST /why``, where the server listens, and its limits and batching."""

    run: str | None = None
    """Report folder or run name (None: quickstart, or none with --sae)."""
    sae: str | None = None
    """SAE export folder (None: the run's, checkpoints/<run>/sae)."""
    classifier: str | None = None
    """Classifier checkpoint (None: the one the SAE records)."""
    explanations: str | None = None
    """Explanation methods whose text labels a latent, comma-separated in order of preference, e.g. line,labels
    (None: sae_lab.run.DEFAULT_PREFERENCE, then any other method of the run)."""
    host: Literal["127.0.0.1", "0.0.0.0", "::"] = "127.0.0.1"
    """Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every IPv4 interface; '::': every one)."""
    port: int = 8000
    """TCP port (1024–65535), free on that address."""
    top: int = 5
    """Latents listed per answer."""
    llm: str | None = None
    """Text backend that rewords the sentence, e.g. openai:<model>@<url> (None: the template)."""
    # The limits' None is stated in their help, not imported (the server module imports torch and LitServe; --help
    # must not); a test keeps the stated figures equal to sae_lab.inference.upload's.
    max_bytes: int | None = None
    """Largest request body in bytes, 413 above (None: the server's limit, 10 MiB)."""
    max_pixels: int | None = None
    """Largest image, width × height, 413 above (None: the server's limit, 16 000 000)."""
    max_side: int | None = None
    """Largest image width or height, 413 above (None: the server's limit, 8192)."""
    max_decode_bytes: int | None = None
    """Largest decoded image in memory, width × height × bytes per pixel (1 grey, 2 16-bit grey, 4 colour), 413
    above, checked from the header before decoding (None: the server's limit, 64 MiB)."""
    body_timeout: float = 10.0
    """Seconds a client has to send a request body once its headers arrived (408 and the connection closed
    after); a connection that sends no whole request within this time + 1 s is closed."""
    decoders: int = 2
    """Uploads decoded at once; others wait their turn (memory stays bounded however many clients send)."""
    max_batch_size: int = 8
    """Requests explained together."""
    batch_timeout: float = 0.005
    """Seconds to wait for a batch to fill."""
    workers: int = 1
    """Inference worker processes (one that dies is restarted)."""
    threads: int | None = None
    """Torch threads per worker (None: torch's default)."""
    timeout: float = 60
    """Seconds a request may wait for its answer before a 504."""
    accelerator: Literal["cpu", "cuda", "auto"] = "cpu"
    """Where the models run."""
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "warning"
    """uvicorn / LitServe log level."""

    def __post_init__(self):
        if not 1024 <= self.port <= 65535:
            raise UsageError(f"port must be in 1024..65535, got {self.port}")
        if self.top < 0:
            raise UsageError(f"top must be >= 0, got {self.top}")
        for name in ("max_batch_size", "workers", "threads", "max_bytes", "max_pixels", "max_side",
                     "max_decode_bytes", "decoders"):  # fmt: skip
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"{name} must be >= 1, got {value}")
        for name in ("timeout", "body_timeout"):
            if not getattr(self, name) > 0:  # NaN too
                raise UsageError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if not self.batch_timeout >= 0:
            raise UsageError(f"batch_timeout must be >= 0 seconds, got {self.batch_timeout}")
        if self.batch_timeout >= self.timeout:  # LitServe refuses it, after loading the run
            raise UsageError(f"batch_timeout ({self.batch_timeout}) must be less than timeout ({self.timeout})")
        bad = [m for m in self.methods or () if not METHOD_NAME.fullmatch(m)]
        if bad or self.methods == ():
            raise UsageError(f"explanations must be comma-separated method names (e.g. line,labels), "
                             f"got {self.explanations!r}")  # fmt: skip
        if self.llm is not None and not self.llm.strip():
            raise UsageError("llm must be a backend spec such as openai:<model>@<url>, or left out")

    @property
    def methods(self) -> tuple[str, ...] | None:
        """The explanation methods named, in order (None: the default preference)."""
        if self.explanations is None:
            return None
        return tuple(m.strip() for m in self.explanations.split(",") if m.strip())

    def limits(self) -> dict[str, int]:
        """The request limits given (the server's own apply to the others)."""
        names = ("max_bytes", "max_pixels", "max_side", "max_decode_bytes")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}


def check_port(host: str, port: int) -> None:
    """Raises UsageError when ``host:port`` cannot be listened on (in use, or an address this machine lacks)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT does not count
        try:
            sock.bind((host, port))
        except OSError as e:
            raise UsageError(f"cannot listen on {host} port {port}: {e.strerror or e} (is another server there? "
                             "pick another --port)") from None  # fmt: skip


def check_llm(spec: str) -> None:
    """Raises ValueError / FileNotFoundError for an ``--llm`` spec the text backends refuse. The remote and
    offline backends are built (cheap: no request is sent) and dropped; a local ``hf:`` model is only checked to
    exist, since loading it here would double its memory."""
    from sae_lab.backends.text.spec import make_backend
    from sae_lab.errors import check_model_source

    kind, _, arg = spec.strip().partition(":")
    if kind.lower() in ("hf", "transformers"):
        if not arg:
            raise UsageError(f"llm {spec!r}: '{kind}:' needs a Hugging Face Hub id or a local folder")
        check_model_source(arg, "llm model")
        return
    try:
        make_backend(spec)
    except ValueError as e:
        raise UsageError(f"llm: {e}") from None


def check_start(s: ServeSettings) -> None:
    """The checks that need the machine: the port is free, the LLM spec loads, the accelerator exists."""
    from sae_lab.errors import check_device

    check_port(s.host, s.port)
    if s.llm is not None:
        check_llm(s.llm)
    if s.accelerator == "cuda":
        check_device("cuda", "accelerator")


def run_serve(s: ServeSettings) -> int:
    """Checks the settings, loads the run, then serves until Ctrl+C or SIGTERM."""
    check_start(s)
    from sae_lab.inference.server import build_server

    server = build_server(s.run, s.sae, s.classifier, top=s.top, llm=s.llm, explanations=s.methods,
                          body_timeout=s.body_timeout, decoders=s.decoders, max_batch_size=s.max_batch_size,
                          batch_timeout=s.batch_timeout, workers=s.workers, threads=s.threads, timeout=s.timeout,
                          accelerator=s.accelerator, **s.limits())  # fmt: skip
    main_pid = os.getpid()

    def stop(signum, frame):  # SIGTERM shuts down like Ctrl+C: LitServe then stops its workers too
        if os.getpid() != main_pid:  # a forked HTTP process re-raising the SIGTERM uvicorn handled: done
            os._exit(0)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (`cmd &`)
    host = "[::1]" if s.host == "::" else s.host
    print(
        f"serving POST http://{host}:{s.port}/why and GET /health once the worker has loaded the run (Ctrl+C stops)",
        flush=True,
    )
    server.run(host=s.host, port=s.port, log_level=s.log_level)
    return 0
