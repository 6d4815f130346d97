"""``report.json`` records its SAE folder, classifier checkpoint and data folder relative to the run folder, so a
run moved together with its checkpoints still loads; a report folder copied alone still finds the checkpoints where
they were (the absolute paths, kept as a fallback); without either the error names the paths looked for; reports
written before (absolute paths only) still load (issue 19, item 9)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sae_lab.report import run_report
from sae_lab.run import RunFiles, load_run, read_json, write_json
from sae_lab.run.files import PATHS_KEY, RELATIVE_TO_RUN
from tests.helpers.threads import one_thread  # noqa: F401
from tests.report.test_report_pipeline import make_sae

SAE = Path("models/sae-v1")  # not the conventional checkpoints/<run>/sae: only report.json says where it is
CKPT = Path("models/classifier/best.ckpt")


@pytest.fixture(scope="module")
def finished(classifier_ckpt, tmp_path_factory) -> Path:
    """``<root>/reports/tiny`` reported from ``<root>/models/sae-v1`` on ``<root>/models/classifier/best.ckpt``."""
    root = tmp_path_factory.mktemp("paths") / "a"
    (root / CKPT).parent.mkdir(parents=True)
    shutil.copyfile(classifier_ckpt, root / CKPT)
    make_sae(root / CKPT, root / SAE)  # its cfg.json records the checkpoint's absolute path
    run_report(root / SAE, root / "reports" / "tiny", progress=False, n_exemplars=2)
    return root


@contextmanager
def away(folder: Path) -> Iterator[None]:
    """``folder`` is gone (renamed away) inside the block, and put back after it."""
    hidden = folder.with_name(folder.name + "-away")
    folder.rename(hidden)
    try:
        yield
    finally:
        hidden.rename(folder)


def test_report_json_records_paths_relative_to_the_run_folder(finished):
    report = read_json(RunFiles(finished / "reports" / "tiny").report)
    assert report[PATHS_KEY] == RELATIVE_TO_RUN
    assert report["sae"]["dir"] == "../../models/sae-v1"
    assert report["classifier"]["checkpoint"] == "../../models/classifier/best.ckpt"
    assert not Path(report["data"]["source"]).is_absolute()  # the world folder, wherever the test's tmp put it
    assert report["sae"]["dir_absolute"] == str((finished / SAE).resolve())  # the fallback
    assert report["classifier"]["checkpoint_absolute"] == str((finished / CKPT).resolve())


def test_a_moved_run_loads_with_its_checkpoints_beside_it(finished, tmp_path, monkeypatch):
    """Before: report.json held absolute paths into the old folder, and the moved run could not find them."""
    moved = tmp_path / "b"
    shutil.copytree(finished, moved)
    monkeypatch.chdir(tmp_path)  # any working folder
    with away(finished):  # the old folder is gone
        loaded = load_run(moved / "reports" / "tiny")
        assert loaded.paths.sae_dir.resolve() == (moved / SAE).resolve()
        assert Path(loaded.paths.classifier).resolve() == (moved / CKPT).resolve()
        assert loaded.sae.cfg.num_latents > 0 and loaded.classifier.class_names


def test_a_report_folder_copied_alone_finds_the_checkpoints_where_they_were(finished, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(finished / "reports", tmp_path / "c" / "reports")
    loaded = load_run(tmp_path / "c" / "reports" / "tiny")
    assert loaded.paths.sae_dir.resolve() == (finished / SAE).resolve()


def test_a_run_moved_without_its_checkpoints_names_the_paths_looked_for(finished, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    alone = tmp_path / "c"
    shutil.copytree(finished / "reports", alone / "reports")
    with away(finished), pytest.raises(FileNotFoundError, match=re.escape(str((alone / SAE).resolve()))):
        load_run(alone / "reports" / "tiny")
    shutil.copytree(finished / SAE, alone / SAE)  # the SAE, not the classifier; its cfg.json's path made useless
    cfg = read_json(alone / SAE / "cfg.json")
    cfg["metadata"]["classifier_checkpoint"] = str(tmp_path / "nowhere" / "best.ckpt")
    write_json(alone / SAE / "cfg.json", cfg)
    with away(finished), pytest.raises(FileNotFoundError, match=re.escape(str((alone / CKPT).resolve()))):
        load_run(alone / "reports" / "tiny")


def test_a_report_written_before_with_absolute_paths_still_loads(finished, tmp_path, monkeypatch):
    old = tmp_path / "old"
    shutil.copytree(finished / "reports", old / "reports")
    report = read_json(RunFiles(old / "reports" / "tiny").report)
    del report[PATHS_KEY], report["sae"]["dir_absolute"], report["classifier"]["checkpoint_absolute"]
    report["sae"]["dir"] = str((finished / SAE).resolve())
    report["classifier"]["checkpoint"] = str((finished / CKPT).resolve())
    write_json(RunFiles(old / "reports" / "tiny").report, report)
    monkeypatch.chdir(tmp_path)
    loaded = load_run(old / "reports" / "tiny")
    assert loaded.paths.sae_dir.resolve() == (finished / SAE).resolve()
