"""Shared fixtures: a tiny sketch world on disk, and a runner for the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
IMAGE_SIZE = 32
N_TRAIN = 144
N_TEST = 36

torch.set_num_threads(2)


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
