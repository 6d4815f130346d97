"""A killed report's staging folder (``reports/.<run>.tmp-<pid>``) is removed by the next report, of any run, once
its process is gone; nothing else is touched (issue 19, item 9)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sae_lab.report import run_report
from sae_lab.run.leftovers import OWNER, remove_stale
from tests.helpers.threads import one_thread  # noqa: F401
from tests.report.test_report_pipeline import make_sae


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The id of a process that has exited (and was reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def staging(reports, name: str, pid: int, owner: dict | None = None, stats: bool = True):
    folder = reports / f".{name}.tmp-{pid}"
    (folder / ".stats").mkdir(parents=True) if stats else folder.mkdir(parents=True)
    if stats:
        (folder / ".stats" / "rows.npy").write_bytes(b"\0" * 1024)
    if owner is not None:
        (folder / OWNER).write_text(json.dumps(owner))
    return folder


def test_the_next_report_removes_a_killed_reports_staging_and_nothing_else(classifier_ckpt, tmp_path, dead_pid):
    import socket

    reports = tmp_path / "reports"
    killed_old = staging(reports, "quickstart", dead_pid)  # left by a version without the owner marker
    killed = staging(reports, "other", dead_pid, {"pid": dead_pid, "host": socket.gethostname()}, stats=False)
    running = staging(reports, "busy", os.getppid())  # a live process
    elsewhere = staging(reports, "shared", dead_pid, {"pid": dead_pid, "host": "another-machine"})
    not_ours = reports / f".notes.tmp-{dead_pid}"  # our name pattern, but nothing a report writes
    not_ours.mkdir()
    (not_ours / "mine.txt").write_text("keep")
    visible = reports / f"plain.tmp-{dead_pid}"  # not hidden: not a name the tool gives
    visible.mkdir()

    sae_dir = make_sae(classifier_ckpt, tmp_path / "sae")
    run_report(sae_dir, reports / "tiny", progress=False)
    assert (reports / "tiny/neurons.jsonl").is_file() and not (reports / "tiny" / OWNER).exists()
    assert not killed_old.exists() and not killed.exists()
    assert running.exists() and elsewhere.exists() and not_ours.exists() and visible.exists()
    assert sorted(p.name for p in reports.glob(".*.tmp-*")) == sorted(
        p.name for p in (running, elsewhere, not_ours)
    )  # and the report's own staging went into place


def test_stale_files_of_atomic_writes_and_the_image_cache(tmp_path, dead_pid):
    (tmp_path / f".state.json.tmp-{dead_pid}").write_text("{")
    (tmp_path / f".abc.png.tmp-{dead_pid}").write_bytes(b"x")
    (tmp_path / f".abc.png.tmp-{os.getpid()}").write_bytes(b"x")  # this process's own: being written
    (tmp_path / "state.json").write_text("{}")
    removed = remove_stale(tmp_path)
    assert sorted(p.name for p in removed) == sorted([f".state.json.tmp-{dead_pid}", f".abc.png.tmp-{dead_pid}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".abc.png.tmp-{os.getpid()}", "state.json"]
