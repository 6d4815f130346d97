"""Simulation correlation (LE's protocol) and "the evaluator discriminates" on a small planted case:
oracle > top-class > random on simulation r and on naming, each gap larger than 2 standard errors."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from sae_lab.evaluate import (
    PresenceTable,
    baselines,
    mean_se,
    naming,
    offline_presence,
    pearson_r,
    simulate,
    vocabulary,
)
from sae_lab.run import ExplanationRecord, Term
from tests.evaluate.planted import CLASS_NAMES, NUM_LATENTS, planted_neurons, planted_probe
from tests.helpers.threads import one_thread  # noqa: F401


def annotated(cls: str, prims: list[str]) -> Image.Image:
    img = Image.new("L", (8, 8), 255)
    img.info.update({"class": cls, "primitives": prims})
    return img


def test_offline_presence_reads_the_annotations():
    images = [annotated("sun", ["circle", "spokes"]), annotated("house", ["square", "triangle"])]
    p = offline_presence(images, ["circle", "ring", "sun", "house", "square and triangle", "zebra", "star"])
    assert p.tolist() == [[1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0, 0]]
    with pytest.raises(ValueError, match="annotated"):
        offline_presence([Image.new("L", (8, 8))], ["circle"])


def test_pearson_conventions():
    assert pearson_r(torch.tensor([0.0, 1, 2]), torch.tensor([1.0, 3, 5])) == pytest.approx(1.0)
    assert pearson_r(torch.zeros(3), torch.tensor([1.0, 3, 5])) == 0.0  # predicts nothing
    assert pearson_r(torch.tensor([0.0, 1, 2]), torch.ones(3)) is None  # the latent does not vary


def test_linear_prediction_is_the_weighted_sum_of_presences_plus_bias():
    probe = planted_probe()
    idx = probe.partition(0)["heldout"]
    lin = ExplanationRecord(0, "le", "x", terms=[Term("circle", 0.6), Term("star", -0.3)], bias=0.2)
    table = PresenceTable(offline_presence, [probe.pil(int(i)) for i in idx])
    r = simulate({0: lin}, table, probe, idx)[0]
    prims = probe.primitives[idx]
    pred = 0.6 * prims[:, 0] - 0.3 * prims[:, 3] + 0.2
    expected = np.corrcoef(pred.numpy(), probe.z_avg[idx, 0].numpy())[0, 1]
    assert r == pytest.approx(float(expected), abs=1e-6)
    asked = table.asked
    simulate({0: ExplanationRecord.single(0, "m", "circle")}, table, probe, idx)
    assert table.asked == asked  # presences are shared, not asked again


def gap_over_2se(a: dict, b: dict) -> bool:
    return a["mean"] - b["mean"] > 2 * math.hypot(a["se"] or 0.0, b["se"] or 0.0)


def test_the_evaluator_discriminates_on_a_planted_case():
    probe = planted_probe()
    neurons = {n.latent: n for n in planted_neurons()}
    latents = list(range(NUM_LATENTS))
    rows = baselines(neurons, latents, vocabulary(CLASS_NAMES, True), seed=0)
    idx = probe.partition(0)["heldout"]
    table = PresenceTable(offline_presence, [probe.pil(int(i)) for i in idx])
    sim = {m: mean_se(simulate(recs, table, probe, idx).values()) for m, recs in rows.items()}
    strict = {m: mean_se(naming(r, neurons[k])[0] for k, r in recs.items()) for m, recs in rows.items()}
    lenient = {m: mean_se(naming(r, neurons[k])[1] for k, r in recs.items()) for m, recs in rows.items()}
    assert all(v["n"] == NUM_LATENTS for v in sim.values())
    assert gap_over_2se(sim["oracle"], sim["top-class"]) and gap_over_2se(sim["top-class"], sim["random"])
    assert gap_over_2se(strict["oracle"], strict["top-class"]) and gap_over_2se(strict["oracle"], strict["random"])
    # a class name always names >= 2 primitives, so top-class is never strictly right: lenient orders it above random
    assert strict["top-class"]["mean"] == 0.0
    assert gap_over_2se(lenient["top-class"], lenient["random"])
