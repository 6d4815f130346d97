"""`python -m sae_lab serve`: ``POST /why`` (an image in, the `why --json` object out) and ``GET /health``."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Literal

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
    host: Literal["127.0.0.1", "0.0.0.0", "::"] = "127.0.0.1"
    """Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every IPv4 interface; '::': every one)."""
    port: int = 8000
    """TCP port (1024–65535)."""
    top: int = 5
    """Latents listed per answer."""
    llm: str | None = None
    """Text backend that rewords the sentence, e.g. openai:<model>@<url> (None: the template)."""
    # The limits' None is stated in their help, not imported (the server module imports torch and LitServe; --help
    # must not); a test keeps the stated figures equal to sae_lab.inference.server's.
    max_bytes: int | None = None
    """Largest request body in bytes, 413 above (None: the server's limit, 10 MiB)."""
    max_pixels: int | None = None
    """Largest image, width × height, 413 above (None: the server's limit, 16 000 000)."""
    max_side: int | None = None
    """Largest image width or height, 413 above (None: the server's limit, 8192)."""
    max_batch_size: int = 8
    """Requests explained together."""
    batch_timeout: float = 0.005
    """Seconds to wait for a batch to fill."""
    workers: int = 1
    """Inference worker processes."""
    threads: int | None = None
    """Torch threads per worker (None: torch's default)."""
    timeout: float = 60
    """Seconds a request may wait before a 504."""
    accelerator: Literal["cpu", "cuda", "auto"] = "cpu"
    """Where the models run."""
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "warning"
    """uvicorn / LitServe log level."""

    def __post_init__(self):
        if not 1024 <= self.port <= 65535:
            raise ValueError(f"port must be in 1024..65535, got {self.port}")
        if self.top < 0:
            raise ValueError(f"top must be >= 0, got {self.top}")
        for name in ("max_batch_size", "workers", "threads", "max_bytes", "max_pixels", "max_side"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.batch_timeout < 0 or self.timeout <= 0:
            raise ValueError(f"batch_timeout must be >= 0 and timeout > 0, got {self.batch_timeout}, {self.timeout}")

    def limits(self) -> dict[str, int]:
        """The request limits given (the server's own apply to the others)."""
        return {k: getattr(self, k) for k in ("max_bytes", "max_pixels", "max_side") if getattr(self, k) is not None}


def run_serve(s: ServeSettings) -> int:
    """Loads the run, then serves until Ctrl+C or SIGTERM."""
    from sae_lab.inference.server import build_server

    server = build_server(s.run, s.sae, s.classifier, top=s.top, llm=s.llm, max_batch_size=s.max_batch_size,
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
    print(f"serving POST http://{host}:{s.port}/why and GET /health (Ctrl+C stops)", flush=True)
    server.run(host=s.host, port=s.port, generate_client_file=False, num_api_servers=1,
               log_level=s.log_level)  # fmt: skip
    return 0
