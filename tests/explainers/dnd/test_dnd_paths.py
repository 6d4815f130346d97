"""DnD's files name paths relative to the run folder (issue 19, item 9): ``dnd/settings.json`` records no absolute
path, and a run folder moved with its checkpoints resumes with nothing redone."""

from __future__ import annotations

import shutil

from sae_lab.explainers.dnd import DndSettings, run_dnd
from sae_lab.run import RunFiles, read_json
from tests.explainers.dnd.dnd_fixtures import *  # noqa: F403 -- fixtures (autouse ones included)
from tests.explainers.dnd.dnd_fixtures import FAST, lines, make_run


def test_settings_copy_is_relative_and_a_moved_run_resumes(classifier_ckpt, tmp_path, monkeypatch):
    root = tmp_path / "a"
    run = make_run(root, classifier_ckpt)
    sae = (root / "checkpoints" / "tiny" / "sae").resolve()
    cache = (root / "images").resolve()
    run_dnd(DndSettings(run=str(run), sae=str(sae), image_cache=str(cache), **FAST))
    copy = read_json(RunFiles(run).method_dir("dnd") / "settings.json")
    assert copy["run"] == "." and copy["sae"] == "../../checkpoints/tiny/sae" and copy["image_cache"] == "../../images"
    assert copy["classifier"] is None and copy["paths"] == "relative to the run folder"
    assert str(tmp_path) not in RunFiles(run).method_dir("dnd").joinpath("settings.json").read_text()

    run_dnd(DndSettings(run=str(run), **FAST))  # the defaults (another settings hash: the SAE given as a path)
    before = lines(RunFiles(run).explanations("dnd"))
    moved = tmp_path / "b"
    shutil.copytree(root, moved)
    shutil.rmtree(root)
    monkeypatch.chdir(tmp_path)
    block = run_dnd(DndSettings(run=str(moved / "reports" / "tiny"), **FAST))
    assert block["explained"] == 4 and block["images_generated"] == block["forward_images"] == 0  # nothing redone
    assert lines(RunFiles(moved / "reports" / "tiny").explanations("dnd")) == before
    for r in before:  # the card's thumbnails are found in the moved folder
        assert all((moved / "reports" / "tiny" / x["image"]).is_file() for x in r["detail"]["crops"])
