"""Latency of ``why`` on this CPU: one image through the Python API (p50/p95), batched images/s, and HTTP under
concurrent clients (``python -m sae_lab serve`` on loopback, every request counted).

Inputs are PNG bytes of held-out sketch-world images, so each figure includes decoding. The server is started as
a user starts it and stopped with SIGTERM.

    python benchmarks/why_latency.py --run reports/quickstart
    python benchmarks/why_latency.py --sae checkpoints/sweep/m512_r0 --http-seconds 30 --clients 8

Ends with one ``key=value`` line per figure.
"""

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sae_lab.data.world import SketchWorld  # noqa: E402
from sae_lab.inference import SaeLab  # noqa: E402


def pngs(n: int, size: int, first: int = 5000) -> list[bytes]:
    from PIL import Image

    world, out = SketchWorld(image_size=size), []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(world.sample(first + i, "test").image).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def bench_python(lab: SaeLab, images: list[bytes], n_single: int, batch: int, rounds: int) -> dict:
    for img in images[:10]:  # warm-up
        lab.why(img)
    times = []
    for i in range(n_single):
        t = time.perf_counter()
        lab.why(images[i % len(images)])
        times.append(time.perf_counter() - t)
    p50, p95 = percentiles(times)
    lab.why(images[:batch])
    t = time.perf_counter()
    for _ in range(rounds):
        lab.why(images[:batch], batch_size=batch)
    ips = rounds * batch / (time.perf_counter() - t)
    return {"single_p50_ms": round(p50, 2), "single_p95_ms": round(p95, 2), "batched_images_per_s": round(ips, 1),
            "batch": batch}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_http(args, images: list[bytes]) -> dict:
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "sae_lab", "serve", "--port", str(port), "--max-batch-size", str(args.server_batch)]
    cmd += ["--run", args.run] if args.run else []
    cmd += ["--sae", args.sae] if args.sae else []
    cmd += ["--classifier", args.classifier] if args.classifier else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}")
            try:
                if httpx.get(base + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - t0 > 300:
                raise RuntimeError("the server did not become healthy in 300 s")
            time.sleep(0.5)
        startup = time.monotonic() - t0
        sent, answered, errors, latencies = (
            [0] * args.clients,
            [0] * args.clients,
            [],
            [[] for _ in range(args.clients)],
        )
        with httpx.Client(base_url=base, timeout=60) as c:  # warm-up
            c.post("/why", files={"image": ("w.png", images[0], "image/png")})
        stop = time.monotonic() + args.http_seconds

        def client(i: int) -> None:
            with httpx.Client(base_url=base, timeout=60) as c:
                n = 0
                while time.monotonic() < stop:
                    img = images[(i * 997 + n) % len(images)]
                    n += 1
                    sent[i] += 1
                    t = time.perf_counter()
                    try:
                        r = c.post("/why", files={"image": (f"{i}-{n}.png", img, "image/png")})
                    except httpx.HTTPError as e:
                        errors.append(repr(e))
                        continue
                    latencies[i].append(time.perf_counter() - t)
                    if r.status_code == 200 and r.json()["image"] == f"{i}-{n}.png":
                        answered[i] += 1
                    else:
                        errors.append(f"{r.status_code}: {r.text[:200]}")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        t = time.monotonic()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.monotonic() - t
        p50, p95 = percentiles([x for lat in latencies for x in lat])
        return {"http_clients": args.clients, "http_seconds": round(wall, 1), "http_sent": sum(sent),
                "http_answered": sum(answered), "http_lost": sum(sent) - sum(answered), "http_errors": errors[:5],
                "http_p50_ms": round(p50, 1), "http_p95_ms": round(p95, 1),
                "http_requests_per_s": round(sum(answered) / wall, 1), "server_startup_s": round(startup, 1)}  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default=None, help="report folder or run name (default: quickstart, none with --sae)")
    p.add_argument("--sae", default=None, help="SAE export folder (default: the run's)")
    p.add_argument("--classifier", default=None, help="classifier checkpoint (default: the SAE's)")
    p.add_argument("--single", type=int, default=200, help="single-image calls timed")
    p.add_argument("--batch", type=int, default=64, help="images per batched call")
    p.add_argument("--rounds", type=int, default=5, help="batched calls timed")
    p.add_argument("--http-seconds", type=float, default=30, help="length of the HTTP run (0: skip it)")
    p.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients")
    p.add_argument("--server-batch", type=int, default=8, help="the server's --max-batch-size")
    p.add_argument("--threads", type=int, default=None, help="torch threads (here and in the server worker)")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    t = time.perf_counter()
    lab = SaeLab.load(args.run, sae=args.sae, classifier=args.classifier)
    figures = {"cpu_count": os.cpu_count(), "load_avg_1m_start": round(os.getloadavg()[0], 2),
               "load_s": round(time.perf_counter() - t, 1), "num_latents": lab.num_latents, "k": lab.sae.cfg.k,
               "image_size": lab.image_size, "torch_threads": torch.get_num_threads()}  # fmt: skip
    images = pngs(max(args.batch, 64), lab.image_size)
    figures.update(bench_python(lab, images, args.single, args.batch, args.rounds))
    del lab
    if args.http_seconds > 0:
        figures.update(bench_http(args, images))
    figures["load_avg_1m_end"] = round(os.getloadavg()[0], 2)  # other work on the machine skews every figure
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    for key, value in figures.items():
        print(f"{key}={value}")


if __name__ == "__main__":
    main()
