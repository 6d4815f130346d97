"""Wall time of a batch of remote LLM requests against the sequential sum, at several concurrency limits.

A fake server on loopback answers every request after a fixed delay, in the OpenAI chat-completions shape and in
Replicate's prediction shape (``Prefer: wait``), so the figures measure the client side: thread pool, retries
wrapper, connection pool. Nothing leaves the machine.

    python benchmarks/llm_concurrency.py                          # 32 requests, 0.2 s each, concurrency 1 4 8 16
    python benchmarks/llm_concurrency.py --requests 64 --delay 0.1 --backends openai

Ends with one line ``speedup_at_<max concurrency>=<x>`` per backend.
"""

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sae_lab.backends.text import ChatRequest  # noqa: E402
from sae_lab.backends.text.openai_compat import OpenAICompatBackend  # noqa: E402
from sae_lab.backends.text.remote import RetryPolicy  # noqa: E402
from sae_lab.backends.text.replicate_backend import ReplicateBackend  # noqa: E402


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
                reply = {"choices": [{"message": {"role": "assistant", "content": "ok"}}]}
            else:
                reply = {"id": "p", "model": "a/b", "version": "v", "status": "succeeded", "input": body["input"]}
                reply["output"] = ["o", "k"]
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


def make(kind: str, url: str, concurrency: int):
    retry = RetryPolicy(max_retries=0)
    if kind == "openai":
        return OpenAICompatBackend("bench", f"{url}/v1", concurrency=concurrency, retry=retry)
    os.environ.setdefault("REPLICATE_API_TOKEN", "r8_benchmark_placeholder")  # the fake server ignores it
    return ReplicateBackend("a/b", base_url=url, concurrency=concurrency, retry=retry)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=32, help="requests per batch")
    parser.add_argument("--delay", type=float, default=0.2, help="server latency per request, seconds")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16], help="limits to try")
    parser.add_argument("--backends", nargs="+", default=["openai", "replicate"], choices=["openai", "replicate"])
    args = parser.parse_args()

    server = start_server(args.delay)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    requests = [ChatRequest.from_prompt(f"prompt {i}", max_new_tokens=8) for i in range(args.requests)]
    print(f"{args.requests} requests, {args.delay:.2f} s server latency each")
    print(
        f"{'backend':<10} {'concurrency':>11} {'wall s':>8} {'seq. sum s':>11} {'ideal s':>8} {'speed-up':>9} {'ok':>4}"
    )
    summary = []
    for kind in args.backends:
        speedup = float("nan")
        for concurrency in args.concurrency:
            backend = make(kind, url, concurrency)
            backend.generate(requests[:1])  # warm the client and the connection
            start = time.monotonic()
            results = backend.generate(requests)
            wall = time.monotonic() - start
            seq_sum = sum(r.seconds for r in results)
            ideal = -(-args.requests // concurrency) * args.delay
            speedup = seq_sum / wall
            ok = sum(r.ok for r in results)
            print(f"{kind:<10} {concurrency:>11} {wall:>8.2f} {seq_sum:>11.2f} {ideal:>8.2f} {speedup:>8.1f}x {ok:>4}")
        summary.append(f"{kind}_speedup_at_{args.concurrency[-1]}={speedup:.1f}")
    server.shutdown()
    print(" ".join(summary))


if __name__ == "__main__":
    main()
