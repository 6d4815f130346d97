"""Writing the sketch world: nothing destroyed on bad input, a killed run keeps the old world, a concurrent run's
temporaries are left alone (issue 19, item 1)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from sae_lab.data.export import WORLD_META, clean_leftovers, export_world
from sae_lab.run.leftovers import OWNER

SMALL = {"n_train": 8, "n_test": 2, "image_size": 16, "workers": 1, "progress": False}


def test_overwrite_never_deletes_a_folder_it_did_not_write(tmp_path):
    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="image_size must be in"):
        export_world(mine, **{**SMALL, "image_size": 8}, overwrite=True)
    with pytest.raises(FileExistsError, match="not a sketch-world export"):
        export_world(mine, **SMALL, overwrite=True)
    assert (mine / "keep.txt").read_text() == "x"


def test_a_world_is_replaced_only_once_the_new_one_is_complete(tmp_path, monkeypatch):
    out = export_world(tmp_path / "world", **SMALL)
    before = (out / WORLD_META).read_text()
    import sae_lab.data.export as export

    def boom(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(export, "_rows", boom)
    with pytest.raises(RuntimeError, match="killed"):
        export_world(out, **SMALL, seed=1, overwrite=True)
    assert (out / WORLD_META).read_text() == before  # the old world is intact
    monkeypatch.undo()
    export_world(out, **SMALL, seed=1, overwrite=True)
    assert '"seed": 1' in (out / WORLD_META).read_text()
    assert not list(tmp_path.glob("world.tmp-*"))  # the killed run's leftovers were cleaned


def _dead_pid() -> int:
    """The pid of a process that has finished (a killed export's, for the leftovers' names)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_kill_between_the_two_renames_restores_the_old_world(tmp_path):
    out = export_world(tmp_path / "world", **SMALL)
    before = (out / WORLD_META).read_text()
    pid = _dead_pid()
    new = shutil.copytree(out, tmp_path / f"world.tmp-{pid}")  # the complete new world, not yet moved in
    os.replace(out, tmp_path / f"world.tmp-{pid}-old")  # the old world, moved aside
    with pytest.raises(FileExistsError, match="already exists"):  # it is back, so it is not silently replaced
        export_world(out, **SMALL, seed=1)
    assert (out / WORLD_META).read_text() == before
    assert not (out / OWNER).exists()
    assert not new.exists() and not list(tmp_path.glob("world.tmp-*"))
    export_world(out, **SMALL, seed=1, overwrite=True)
    assert '"seed": 1' in (out / WORLD_META).read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]


def test_a_concurrent_exports_temporaries_are_left_alone(tmp_path):
    live = tmp_path / f"world.tmp-{os.getppid()}"  # a running process: another export still writing
    (live / "data").mkdir(parents=True)
    live_old = tmp_path / f"world.tmp-{os.getppid()}-old"
    live_old.mkdir()
    (live_old / WORLD_META).write_text("{}")
    dead = tmp_path / f"world.tmp-{_dead_pid()}"
    (dead / "data").mkdir(parents=True)
    other = tmp_path / "worldly.tmp-1"  # another name's: not ours to judge
    other.mkdir()
    out = export_world(tmp_path / "world", **SMALL)  # a live -old with `out` missing is not restored: its run goes on
    assert live.is_dir() and live_old.is_dir() and other.is_dir() and not dead.exists()
    assert json.loads((out / WORLD_META).read_text())["n_train"] == SMALL["n_train"]
    assert clean_leftovers(out) == []


def test_temporaries_marked_by_another_host_are_left_alone(tmp_path):
    stale = tmp_path / f"world.tmp-{_dead_pid()}"
    stale.mkdir()
    (stale / OWNER).write_text(json.dumps({"pid": 1, "host": "elsewhere.invalid"}))
    assert clean_leftovers(tmp_path / "world") == [] and stale.is_dir()
