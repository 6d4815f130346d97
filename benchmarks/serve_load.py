"""`serve` under abuse (issue 19, item 10), on loopback: 16 clients for 30 s sending valid sketches, with 50
stalled uploads (headers and part of a body, then nothing) and 16 large-decode uploads (16-bit 4000² PNGs: small
files, 32 MB each decoded) arriving meanwhile; then the inference worker is killed with SIGKILL (a few requests in
flight) and the service must answer again.

Reports requests answered / failed and their status codes, the server's peak RSS (summed over its process tree:
main, LitServe's manager, the HTTP process, the inference worker; sampled every 0.2 s with psutil when installed,
else /proc; forked processes share pages, so the sum overstates: the PSS sum, from /proc/<pid>/smaps_rollup,
counts each shared page once), the stalled connections closed and the longest
time one was held, and whether a new worker answered after the kill.

    python benchmarks/serve_load.py                       # reports/quickstart, the defaults above
    python benchmarks/serve_load.py --code /tmp/old_tree  # the server of another checkout (before/after)

Ends with one ``key=value`` line.
"""

import argparse
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from sae_lab.data.world import SketchWorld  # noqa: E402


# ------------------------------------------------------------------------------------------------ process tree
def _pss(pid: int) -> int:
    """Proportional set size (pages shared by forked processes counted once overall), 0 where unreadable."""
    try:
        text = (Path("/proc") / str(pid) / "smaps_rollup").read_text()
        return next(int(x.split()[1]) * 1024 for x in text.splitlines() if x.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0


def tree(pid: int) -> dict[int, tuple[str, int]]:
    """``{pid: (command line, RSS bytes)}`` for ``pid`` and its descendants."""
    try:
        import psutil

        root = psutil.Process(pid)
        out = {}
        for p in [root, *root.children(recursive=True)]:
            try:
                out[p.pid] = (" ".join(p.cmdline()), p.memory_info().rss)
            except psutil.Error:
                continue
        return out
    except ImportError:
        pass
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, frontier = {}, [pid]
    while frontier:
        p = frontier.pop()
        try:
            cmd = (Path("/proc") / str(p) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            rss = next(int(x.split()[1]) * 1024 for x in (Path("/proc") / str(p) / "status").read_text().splitlines()
                       if x.startswith("VmRSS:"))  # fmt: skip
        except (OSError, StopIteration):
            continue
        out[p] = (cmd, rss)
        frontier += [c for c, pp in parents.items() if pp == p]
    return out


def workers(pid: int) -> list[int]:
    return [p for p, (cmd, _) in tree(pid).items() if "spawn_main" in cmd]


class RssSampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.peak_pss, self.stop = pid, 0, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            procs = tree(self.pid)
            self.peak = max(self.peak, sum(rss for _, rss in procs.values()))
            self.peak_pss = max(self.peak_pss, sum(_pss(p) for p in procs))
            time.sleep(0.2)


# ------------------------------------------------------------------------------------------------ payloads
def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def large_16bit(side: int) -> bytes:
    """A world sketch blown up to side² as 16-bit grey (what a scanner might send)."""
    small = SketchWorld(image_size=64).sample(1, "test").image
    big = np.asarray(Image.fromarray(small).resize((side, side), Image.NEAREST))
    return png(big.astype(np.uint16) * 257)


def stalled(port: int, hold: float, out: list) -> None:
    """Headers for a 200 kB body, 1 kB of it, then nothing: (closed by the server?, seconds until closed)."""
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"POST /why HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 200000\r\n\r\n")
            s.sendall(b"\x89PNG" + b"\0" * 996)
            s.settimeout(hold)
            while s.recv(4096):
                pass
        out.append((True, time.monotonic() - start))
    except TimeoutError:
        out.append((False, time.monotonic() - start))
    except OSError:  # reset by the server: closed too
        out.append((True, time.monotonic() - start))


LOCK = threading.Lock()


def post(client: httpx.Client, data: bytes, name: str, tally: Counter) -> int | str:
    """POSTs one image; counts and returns its status code (or the transport error's name)."""
    try:
        code = client.post("/why", files={"image": (name, data, "image/png")}).status_code
    except httpx.HTTPError as e:
        code = type(e).__name__
    with LOCK:
        tally[code] += 1
    return code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default=str(REPO / "reports" / "quickstart"))
    ap.add_argument("--code", default=str(REPO), help="checkout whose sae_lab serves (default: this one)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--stalled", type=int, default=50)
    ap.add_argument("--large", type=int, default=16)
    ap.add_argument("--large-side", type=int, default=4000)
    ap.add_argument("--timeout", type=float, default=20, help="serve --timeout (an answer's deadline)")
    ap.add_argument("--hold", type=float, default=40, help="seconds a stalled client waits to be closed")
    args = ap.parse_args()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(Path(tempfile.gettempdir()) / f"serve_load-{port}.log", "w")  # noqa: SIM115
    cmd = [sys.executable, "-m", "sae_lab", "serve", "--run", str(Path(args.run).resolve()), "--port", str(port),
           "--timeout", str(args.timeout)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=args.code, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            assert proc.poll() is None, f"serve exited; see {log.name}"
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        print(f"server up in {time.monotonic() - t0:.1f} s (pid {proc.pid}, log {log.name})", flush=True)
        idle = tree(proc.pid)
        idle_rss, idle_pss = sum(rss for _, rss in idle.values()), sum(_pss(p) for p in idle)
        sampler = RssSampler(proc.pid)
        sampler.start()

        sketches = [png(SketchWorld(image_size=64).sample(100 + i, "test").image) for i in range(args.clients)]
        large = large_16bit(args.large_side)
        codes, large_codes, stalls = Counter(), Counter(), []
        stop = time.monotonic() + args.seconds

        def client(i: int) -> None:
            with httpx.Client(base_url=base, timeout=60) as c:
                while time.monotonic() < stop:
                    post(c, sketches[i], f"{i}.png", codes)

        def large_upload() -> None:
            with httpx.Client(base_url=base, timeout=120) as c:
                post(c, large, "large.png", large_codes)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(2)
        extra = [threading.Thread(target=stalled, args=(port, args.hold, stalls)) for _ in range(args.stalled)]
        time.sleep(1)
        extra += [threading.Thread(target=large_upload) for _ in range(args.large)]
        for t in extra:
            t.start()
        for t in threads + extra:
            t.join()
        load_peak, load_peak_pss = sampler.peak, sampler.peak_pss

        # the worker killed with requests in flight; the service must answer again
        (worker,) = workers(proc.pid) or [None]
        inflight = Counter()

        def in_flight(i: int) -> None:
            with httpx.Client(base_url=base, timeout=args.timeout + 20) as c:
                post(c, sketches[i], "inflight.png", inflight)

        flying = [threading.Thread(target=in_flight, args=(i,)) for i in range(4)]
        for t in flying:
            t.start()
        time.sleep(0.1)
        killed_at = time.monotonic()
        if worker is not None:
            os.kill(worker, signal.SIGKILL)
        recovered, after = None, Counter()
        with httpx.Client(base_url=base, timeout=30) as c:
            while time.monotonic() - killed_at < 120 and proc.poll() is None:
                code = post(c, sketches[0], "after.png", after)
                if code == 200:
                    recovered = time.monotonic() - killed_at
                    break
                time.sleep(0.5)
        for t in flying:
            t.join()
        new_workers = [w for w in workers(proc.pid) if w != worker] if proc.poll() is None else []
        restarted = int(recovered is not None and bool(new_workers))
        sampler.stop.set()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()

    answered = codes.get(200, 0)
    closed = [s for ok, s in stalls if ok]
    print(f"valid sketches, {args.clients} clients x {args.seconds:g} s: {dict(codes)}")
    print(
        f"large 16-bit {args.large_side}^2 uploads (x{args.large}, {len(large) / 1e3:.0f} kB each): {dict(large_codes)}"
    )
    print(
        f"stalled uploads: {len(closed)}/{len(stalls)} closed by the server, longest held {max(closed, default=0):.1f} s"
    )
    print(f"server memory (process tree): RSS idle {idle_rss / 2**20:.0f} MiB, peak under load "
          f"{load_peak / 2**20:.0f} MiB; PSS idle {idle_pss / 2**20:.0f} MiB, peak {load_peak_pss / 2**20:.0f} MiB")  # fmt: skip
    print(f"worker {worker} killed: in-flight requests {dict(inflight)}, polls until an answer {dict(after)}, "
          f"answered again after {'-' if recovered is None else f'{recovered:.1f} s'}, new worker {new_workers}")  # fmt: skip
    print(f"answered={answered} failed={sum(codes.values()) - answered} "
          f"large_ok={large_codes.get(200, 0)} large_failed={sum(large_codes.values()) - large_codes.get(200, 0)} "
          f"idle_rss_mb={idle_rss / 2**20:.0f} peak_rss_mb={load_peak / 2**20:.0f} peak_pss_mb={load_peak_pss / 2**20:.0f} "
          f"stalled_closed={len(closed)} max_stall_s={max(closed, default=0):.1f} restarted={restarted} "
          f"recovery_s={'nan' if recovered is None else f'{recovered:.1f}'}")  # fmt: skip


if __name__ == "__main__":
    main()
