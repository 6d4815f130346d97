"""`python -m sae_lab serve`: ``POST /why`` (an image in, the `why --json` object out) and ``GET /health``."""

from __future__ import annotations

import argparse
import os
import signal

HELP = "serve why over HTTP with LitServe: POST /why (PNG/JPEG upload or base64 JSON), GET /health"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sae_lab.inference.server import MAX_BYTES, MAX_PIXELS, MAX_SIDE

    p.add_argument("--run", default=None, help="report folder or run name (default: quickstart, or none with --sae)")
    p.add_argument("--sae", default=None, help="SAE export folder (default: the run's, checkpoints/<run>/sae)")
    p.add_argument("--classifier", default=None, help="classifier checkpoint (default: the one the SAE records)")
    p.add_argument("--host", default="127.0.0.1", choices=("127.0.0.1", "0.0.0.0", "::"),
                   help="address to listen on (0.0.0.0: every interface)")  # fmt: skip
    p.add_argument("--port", type=int, default=8000, help="TCP port (1024–65535)")
    p.add_argument("--top", type=int, default=5, help="latents listed per answer")
    p.add_argument("--llm", default=None, help="text backend that rewords the sentence (default: the template)")
    p.add_argument("--max-bytes", type=int, default=MAX_BYTES, help="largest request body in bytes (413 above)")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="largest image, width × height (413 above)")
    p.add_argument("--max-side", type=int, default=MAX_SIDE, help="largest image width or height (413 above)")
    p.add_argument("--max-batch-size", type=int, default=8, help="requests explained together")
    p.add_argument("--batch-timeout", type=float, default=0.005, help="seconds to wait for a batch to fill")
    p.add_argument("--workers", type=int, default=1, help="inference worker processes")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: torch's)")
    p.add_argument("--timeout", type=float, default=60, help="seconds a request may wait before a 504")
    p.add_argument("--accelerator", default="cpu", choices=("cpu", "cuda", "auto"), help="where the models run")
    p.add_argument("--log-level", default="warning", help="uvicorn / LitServe log level")


def run(args: argparse.Namespace) -> int:
    from sae_lab.inference.server import build_server

    if not 1024 <= args.port <= 65535:
        raise ValueError(f"--port must be in 1024..65535, got {args.port}")
    if args.top < 0 or args.max_batch_size < 1 or args.workers < 1:
        raise ValueError("--top must be >= 0, --max-batch-size and --workers >= 1")
    server = build_server(args.run, args.sae, args.classifier, top=args.top, llm=args.llm, max_bytes=args.max_bytes,
                          max_pixels=args.max_pixels, max_side=args.max_side, max_batch_size=args.max_batch_size,
                          batch_timeout=args.batch_timeout, workers=args.workers, threads=args.threads,
                          timeout=args.timeout, accelerator=args.accelerator)  # fmt: skip
    main_pid = os.getpid()

    def stop(signum, frame):  # SIGTERM shuts down like Ctrl+C: LitServe then stops its workers too
        if os.getpid() != main_pid:  # a forked HTTP process re-raising the SIGTERM uvicorn handled: done
            os._exit(0)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (`cmd &`)
    host = "[::1]" if args.host == "::" else args.host
    print(f"serving POST http://{host}:{args.port}/why and GET /health (Ctrl+C stops)", flush=True)
    server.run(host=args.host, port=args.port, generate_client_file=False, num_api_servers=1,
               log_level=args.log_level)  # fmt: skip
    return 0
