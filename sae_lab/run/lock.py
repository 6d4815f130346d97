"""One writer per (run folder, stage): a second ``explain labels`` on the same run is refused, naming the holder.

An advisory ``flock`` on ``<run>/.locks/<stage>.lock``: the kernel releases it when the holder exits, killed or not,
so a dead run never leaves a stale lock. The file records who holds it, for the message.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCKS = ".locks"


class RunLocked(RuntimeError):
    """Another process is writing the same stage of the same run."""


@contextmanager
def run_lock(run_dir: str | os.PathLike, stage: str) -> Iterator[Path]:
    """Holds the lock of ``stage`` on ``run_dir`` for the ``with`` block.

    Raises:
        RunLocked: another live process holds it (the message names its pid, command and start time).
    """
    folder = Path(run_dir) / LOCKS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stage}.lock"
    f = open(path, "a+")  # noqa: SIM115 -- held for the block
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            try:
                holder = json.loads(f.read() or "{}")
            except ValueError:
                holder = {}
            raise RunLocked(
                f"{run_dir} is being written by another `{stage}` run (pid {holder.get('pid', '?')}, "
                f"{holder.get('command', '?')}, since {holder.get('since', '?')}); wait for it or use another run"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv[:4]),
                            "since": time.strftime("%Y-%m-%d %H:%M:%S")}))  # fmt: skip
        f.flush()
        yield path
    finally:
        f.close()  # closing releases the lock
