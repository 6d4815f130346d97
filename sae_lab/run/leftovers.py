"""Leftovers of killed runs, cleaned by the next run.

Every stage writes under a hidden temporary name that ends in ``.tmp-<pid>`` (the report's staging folder
``reports/.<run>.tmp-<pid>``, atomic writes' ``.<file>.tmp-<pid>``, the image cache's PNGs) and renames it into place
when done. A run killed before the rename leaves that name behind; the next run removes those whose process is gone.
Only names of the tool's own pattern are touched, only when their pid is not alive on this machine, and a folder
marked with another host's name (a run on a shared file system) is left alone.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

OWNER = ".owner.json"
"""The marker a temporary folder carries: ``{"pid", "host"}`` of the process writing it."""

_TMP = re.compile(r"^\.(?P<base>.+)\.tmp-(?P<pid>\d+)$")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a zombie or a process of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_owner(folder: str | os.PathLike) -> None:
    """Writes :data:`OWNER` into ``folder`` (created): who is writing it, for :func:`remove_stale`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / OWNER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))


def owned_elsewhere(path: str | os.PathLike) -> bool:
    """Whether folder ``path`` carries an :data:`OWNER` marker naming another host (its pid means nothing here)."""
    path = Path(path)
    try:
        owner = json.loads((path / OWNER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(owner, dict) and owner.get("host") not in (None, socket.gethostname())


def stale_entries(folder: str | os.PathLike, base: str | None = None,
                  contains: Sequence[str] | None = None) -> list[Path]:  # fmt: skip
    """The entries of ``folder`` named like a temporary of this tool (``.<base>.tmp-<pid>``) whose process is gone.

    Args:
        folder: Where to look (not recursive).
        base: Only the temporaries of this target name.
        contains: Only folders holding :data:`OWNER` or one of these names (what the tool writes there first).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for path in folder.iterdir():
        m = _TMP.match(path.name)
        if m is None or (base is not None and m["base"] != base) or int(m["pid"]) == os.getpid():
            continue
        if contains is not None and not (path.is_dir() and any((path / n).exists() for n in (OWNER, *contains))):
            continue
        if pid_alive(int(m["pid"])) or (path.is_dir() and owned_elsewhere(path)):
            continue
        out.append(path)
    return sorted(out)


def remove_stale(folder: str | os.PathLike, base: str | None = None,
                 contains: Sequence[str] | None = None) -> list[Path]:  # fmt: skip
    """Removes :func:`stale_entries` (files and folders); returns what it removed."""
    removed = []
    for path in stale_entries(folder, base, contains):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as exc:
            logger.warning("could not remove %s, left by a killed run: %s", path, exc)
            continue
        removed.append(path)
    if removed:
        logger.info("removed %d leftovers of killed runs in %s", len(removed), folder)
    return removed


__all__ = ["OWNER", "mark_owner", "owned_elsewhere", "pid_alive", "remove_stale", "stale_entries"]
