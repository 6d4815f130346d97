"""Shared fixtures: a tiny sketch world on disk, and a runner for the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.common import IMAGE_SIZE, N_TEST, N_TRAIN, REPO, TESTS  # noqa: E402

# One intra-op thread for the whole suite: the tensors are tiny, and with two threads on two shared cores every op
# ends at a barrier that waits for a descheduled thread whenever anything else runs (a subprocess of an earlier
# test, another job): test_contributions_error_and_bias_add_up_to_the_logit took 52.9 s with two threads beside
# two busy processes and 2.7 s with one (issue 11).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory) -> Path:
    """A sketch world exported as parquet (the TU-Berlin schema), small enough for every test."""
    from sae_lab.data.export import export_world

    return export_world(
        tmp_path_factory.mktemp("world") / "world", N_TRAIN, N_TEST, IMAGE_SIZE, seed=0, workers=1, progress=False
    )


def run_cli(*args: str, cwd: Path, timeout: float = 300, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """Runs `python -m sae_lab ARGS` as a user would, with tests/helpers importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "sae_lab", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def classifier_ckpt(world_dir, tmp_path_factory) -> Path:
    """A classifier checkpoint trained for a few steps on the test world (weights barely matter)."""
    import lightning as L

    from sae_lab.data.sketch import SketchDataModule
    from sae_lab.lit.classifier import ClassifierModule

    L.seed_everything(0, verbose=False)
    dm = SketchDataModule(str(world_dir), image_size=IMAGE_SIZE, batch_size=16, num_workers=0, val_fraction=0.25,
                          test_split="test")  # fmt: skip
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1)  # fmt: skip
    trainer.fit(ClassifierModule(), datamodule=dm)
    path = tmp_path_factory.mktemp("classifier") / "best.ckpt"
    trainer.save_checkpoint(path)
    return path
