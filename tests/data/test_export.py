"""Writing the sketch world: nothing destroyed on bad input, a killed run keeps the old world (issue 19, item 1)."""

from __future__ import annotations

import pytest

from sae_lab.data.export import WORLD_META, export_world

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
