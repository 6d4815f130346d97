"""Constants and paths the tests share (importable as `helpers.common`, unlike conftest modules)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]
IMAGE_SIZE = 32
N_TRAIN = 144
N_TEST = 36
