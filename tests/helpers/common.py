"""Constants and paths the tests share (importable as `helpers.common`, unlike conftest modules)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]
IMAGE_SIZE = 32
N_TRAIN = 144
N_TEST = 36


def assert_latents_close(a: list[dict], b: list[dict], tol: float = 1e-5) -> None:
    """Two `why` latent lists from different forward passes: the same latents and labels in the same order, the
    same numbers to float32 rounding (different batch shapes take different kernels)."""
    import pytest

    assert [(x["id"], x["label"]) for x in a] == [(y["id"], y["label"]) for y in b]
    for key in ("activation", "contribution"):
        assert [x[key] for x in a] == pytest.approx([y[key] for y in b], abs=tol), key
