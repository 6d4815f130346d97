"""Wall time of `label` on a synthetic run against the sequential sum of its requests, at several concurrency limits.

A fake server on loopback answers every chat completion (OpenAI shape) or Replicate prediction after a fixed delay
with a well-formed ``SHORT ANSWER`` / ``EVIDENCE`` pair, so the figures measure the labeller's side: chunking,
the backend's thread pool, the fsync'd appends and the final compaction. Nothing leaves the machine.

    python benchmarks/label_concurrency.py                          # 32 latents, 0.2 s each, concurrency 1 4 8 16
    python benchmarks/label_concurrency.py --latents 64 --delay 0.1 --backends openai

Ends with one line ``<backend>_speedup_at_<max concurrency>=<x>`` per backend.
"""

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sae_lab.backends.text import parse_stats_block  # noqa: E402
from sae_lab.backends.text.remote import RetryPolicy  # noqa: E402
from sae_lab.explainers.labels import LABELS, label_run  # noqa: E402
from sae_lab.explainers.labels.run import refresh_index  # noqa: E402


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default listen backlog of 5 drops bursts of connections
    daemon_threads = True


def start_server(delay: float) -> ThreadingHTTPServer:
    """A loopback server answering chat completions and Replicate predictions after ``delay`` seconds."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            time.sleep(delay)
            if self.path.endswith("/chat/completions"):
                latent = parse_stats_block(body["messages"][1]["content"])["latent"]
                answer = f"SHORT ANSWER: concept {latent}\nEVIDENCE: benchmark"
                reply = {"choices": [{"message": {"role": "assistant", "content": answer}}]}
            else:
                latent = parse_stats_block(body["input"]["prompt"])["latent"]
                reply = {"id": f"p{latent}", "model": "a/b", "version": "v", "status": "succeeded"}
                reply.update(input=body["input"], output=["SHORT ANSWER: ", f"concept {latent}\nEVIDENCE: benchmark"])
            data = json.dumps(reply).encode()
            self.send_response(201 if "predictions" in self.path else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def write_run(root: Path, n: int) -> Path:
    """A neurons.jsonl with ``n`` live latents (statistics only, no images)."""
    run = root / "run"
    run.mkdir(parents=True)
    lines = []
    for i in range(n):
        top = [{"class": f"class{i % 7 + j}", "S": 2.0 - j, "pmi": 1.0, "delta": -0.3, "w": 0.5} for j in range(5)]
        stats = {"latent": i, "frequency": 0.01, "monosemanticity": 0.5, "top_classes": top, "anti_classes": top[:2]}
        lines.append(json.dumps({"id": i, "dead": False, "exemplars": [], "sprite": None, "stats_block": stats}))
    (run / "neurons.jsonl").write_text("\n".join(lines) + "\n")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latents", type=int, default=32, help="latents to label")
    parser.add_argument("--delay", type=float, default=0.2, help="server latency per request, seconds")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16], help="limits to try")
    parser.add_argument("--backends", nargs="+", default=["openai", "replicate"], choices=["openai", "replicate"])
    args = parser.parse_args()

    server = start_server(args.delay)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    os.environ.setdefault("REPLICATE_API_TOKEN", "r8_benchmark_placeholder")  # the fake server ignores it
    specs = {"openai": (f"openai:bench@{url}/v1", {}), "replicate": ("replicate:a/b", {"base_url": url})}
    with tempfile.TemporaryDirectory() as tmp:
        run = write_run(Path(tmp), args.latents)
        refresh_index(run)  # import the report renderer now, not inside the first timed run
        print(f"{args.latents} latents, {args.delay:.2f} s server latency each")
        print(f"{'backend':<10} {'concurrency':>11} {'wall s':>8} {'seq. sum s':>11} {'ideal s':>8} {'speed-up':>9}")
        summary = []
        for kind in args.backends:
            spec, opts = specs[kind]
            speedup = float("nan")
            for concurrency in args.concurrency:
                start = time.monotonic()
                outcome = label_run(run, spec, concurrency=concurrency, progress=False, overwrite=True,
                                    backend_opts={**opts, "retry": RetryPolicy(max_retries=0)})  # fmt: skip
                wall = time.monotonic() - start
                rows = [json.loads(line) for line in (run / LABELS).read_text().splitlines()]
                seq_sum = sum(r["seconds"] for r in rows)
                ideal = -(-args.latents // concurrency) * args.delay
                speedup = seq_sum / wall
                assert outcome.labelled == args.latents, outcome
                print(f"{kind:<10} {concurrency:>11} {wall:>8.2f} {seq_sum:>11.2f} {ideal:>8.2f} {speedup:>8.1f}x")
            summary.append(f"{kind}_speedup_at_{args.concurrency[-1]}={speedup:.1f}")
    server.shutdown()
    print(" ".join(summary))


if __name__ == "__main__":
    main()
