"""Fitting the presence sigmoid: planted slopes and offsets are recovered; degenerate inputs are refused."""

import numpy as np
import pytest

from sae_lab.backends.perception import calibrate, fit_sigmoid, make_perception
from tests.backends.perception.annotated import probe_images
from tests.helpers.threads import one_thread  # noqa: F401

N, C = 400, 20


class PlantedCosines:
    """A stand-in for a CLIP/SigLIP backend: "images" are row indices into a fixed cosine matrix."""

    def __init__(self, cos: np.ndarray) -> None:
        self.cos = cos

    def cosine(self, images, concepts):
        assert len(concepts) == self.cos.shape[1]
        return self.cos[np.asarray(images)]


@pytest.mark.parametrize(("a", "b", "seed"), [(60.0, -0.09, 0), (50.0, -0.25, 1), (120.0, -0.1, 2)])
def test_recovers_planted_a_and_b(a, b, seed):
    rng = np.random.default_rng(seed)
    cos = rng.uniform(-b - 0.1, -b + 0.1, size=(N, C))  # logits spread around zero
    labels = (rng.random((N, C)) < 1 / (1 + np.exp(-a * (cos + b)))).astype(float)
    fit_a, fit_b = calibrate(PlantedCosines(cos), range(N), labels, [f"c{i}" for i in range(C)])
    assert fit_a == pytest.approx(a, rel=0.1)
    assert fit_b == pytest.approx(b, abs=0.005)


def test_class_labels_put_the_threshold_between_matched_and_unmatched():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, C, size=N)
    cos = 0.2 + 0.03 * rng.standard_normal((N, C))
    cos[np.arange(N), labels] += 0.1  # matched pairs near 0.3, the others near 0.2
    a, b = calibrate(PlantedCosines(cos), range(N), labels, [f"c{i}" for i in range(C)])
    assert a > 0 and 0.2 < -b < 0.3 + 0.03


def test_refuses_degenerate_input():
    cos = np.random.default_rng(0).uniform(0, 0.3, (N, 3))
    with pytest.raises(ValueError, match="both positive and negative"):
        fit_sigmoid(cos, np.zeros_like(cos))
    with pytest.raises(ValueError, match="do not separate"):
        fit_sigmoid(cos, (cos < 0.15).astype(float))  # presence falling with the cosine
    with pytest.raises(ValueError, match="class indices"):
        calibrate(PlantedCosines(cos), range(N), np.full(N, 3), ["a", "b", "c"])
    with pytest.raises(TypeError, match="no cosines"):
        calibrate(make_perception("offline"), probe_images(2), [0, 1], ["sun", "house"])


def test_calibrate_runs_on_a_tiny_clip(tiny_clip, tmp_path):
    vlm = make_perception(f"hf:{tiny_clip}", cache_dir=tmp_path, device="cpu")
    images, names = probe_images(40), ["sun", "house", "target", "window"]
    cos = vlm.cosine(images, names)
    labels = cos.argmax(axis=1)  # a random model knows no classes: label each image by its best-matching name
    a, b = calibrate(vlm, images, labels, names)
    targets = np.eye(len(names))[labels]
    bce = lambda a_, b_: float(np.mean(np.logaddexp(0, a_ * (cos + b_)) - targets * a_ * (cos + b_)))  # noqa: E731
    assert a > 0 and bce(a, b) < min(bce(a * 1.05, b), bce(a * 0.95, b), bce(a, b + 0.005), bce(a, b - 0.005))
    assert vlm.images_embedded == 40 and vlm.cache_hits == 40  # calibrate's cosines came from the cache
