"""Concept scores (AUC, MAD, mean) against hand-computed values, and scoring many latents on one batch."""

import math

import numpy as np
import pytest
import torch

from sae_lab.explainers.line.scoring import ControlSet, LatentScorer, concept_scores
from sae_lab.stats import mad, roc_auc
from tests.explainers.line.line_fixtures import *  # noqa: F403 -- the LINE fixtures (autouse ones included)

POS = [3.0, 1.0, 2.0]
NEG = [0.0, 1.0, 2.0, 1.0]


def test_auc_and_mad_match_hand_computed_values():
    s = concept_scores(torch.tensor(POS)[:, None], torch.tensor(NEG)[:, None])
    # AUC: 3 beats all 4 (4); 1 beats 0 and ties two 1s (1 + 2·½); 2 beats 0,1,1 and ties 2 (3 + ½) → 9.5 / 12
    assert s.auc.item() == pytest.approx(9.5 / 12)
    # MAD: (2 − 1) / std(0,1,2,1) with Bessel's correction = 1 / sqrt(2/3)
    assert s.mad.item() == pytest.approx(1 / math.sqrt(2 / 3))
    assert s.mean.item() == pytest.approx(2.0)
    assert s.metric("auc") is s.auc
    with pytest.raises(ValueError, match="metric"):
        s.metric("f1")


def test_vectorised_over_latents_equals_the_stats_functions():
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.rand(8, 5, generator=g) + 0.2, torch.rand(40, 5, generator=g)
    neg[:3, 2] = pos[0, 2]  # ties across the two sides
    s = concept_scores(pos, neg)
    for j in range(5):
        assert s.auc[j].item() == pytest.approx(roc_auc(pos[:, j], neg[:, j]))
        assert s.mad[j].item() == pytest.approx(mad(pos[:, j], neg[:, j]))


def test_silent_control_latent_gives_finite_mad_and_empty_positives_nan():
    s = concept_scores(torch.tensor([[1.0], [2.0]]), torch.zeros(10, 1))
    assert s.auc.item() == 1.0 and math.isfinite(s.mad.item()) and s.mad.item() > 1e5
    empty = concept_scores(torch.zeros(0, 3), torch.rand(10, 3))
    assert torch.isnan(empty.auc).all()


def test_control_class_profile_top_classes_and_ground_truth():
    z = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    prims = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    control = ControlSet(z, torch.tensor([0, 0, 1, 2]), prims, ["a", "b", "c"], ["p", "q"])
    assert control.class_profile(0).tolist() == [2.0, 0.0, 0.0]
    assert control.top_classes(1, 2) == ["c", "b"]
    best, auc = control.ground_truth()
    assert best.tolist() == [0, 1] and auc.tolist() == [1.0, 1.0]


class _Net(torch.nn.Module):
    def features(self, x):
        return torch.nn.functional.avg_pool2d(x.repeat(1, 3, 1, 1), 4)  # (B, 3, S/4, S/4)


class _Sae:
    W_dec = torch.eye(3)
    dtype = torch.float32

    def standardize(self, x):
        return x

    def dense_acts(self, x):
        return torch.relu(x)


def test_scorer_converts_any_image_and_takes_the_max_over_tokens():
    from PIL import Image

    scorer = LatentScorer(_Net(), _Sae(), image_size=16, batch_size=2)
    ink = np.full((64, 64, 3), 255, np.uint8)
    ink[:16, :16] = 0  # a dark corner: ink filling one token only
    z = scorer.z_max_images([Image.fromarray(ink), Image.new("L", (20, 20), 255), Image.new("RGBA", (16, 16))])
    assert z.shape == (3, 3) and scorer.images_scored == 3
    assert z[0].tolist() == pytest.approx([1.0] * 3)  # max over tokens picks the inked corner
    assert z[1].tolist() == [0.0] * 3  # white paper: no ink
