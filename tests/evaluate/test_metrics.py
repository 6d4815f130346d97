"""CoSy AUC / MAD against hand-computed values (one implementation: sae_lab.stats.concept), mean ± s.e., and a
method missing latents counted as missing."""

import math

import pytest
import torch

from sae_lab.evaluate import mean_se, method_table
from sae_lab.evaluate.rows import select
from sae_lab.explainers.line.scoring import concept_scores as line_concept_scores
from sae_lab.run import Cost, ExplanationRecord
from sae_lab.stats import concept_scores, mad

POS = [3.0, 1.0, 2.0]
CTRL = [0.0, 1.0, 2.0, 1.0]


def test_cosy_auc_and_mad_match_hand_computed_values():
    s = concept_scores(torch.tensor(POS)[:, None], torch.tensor(CTRL)[:, None])
    # AUC: 3 beats all 4 (4); 1 beats 0, ties two 1s (1 + 2·½); 2 beats 0, 1, 1 and ties 2 (3 + ½): 9.5 / 12
    assert s.auc.item() == pytest.approx(9.5 / 12, abs=1e-12)
    # MAD: (mean 2 − mean 1) / std(0, 1, 2, 1) with Bessel = 1 / sqrt(2/3)
    assert s.mad.item() == pytest.approx(1 / math.sqrt(2 / 3), abs=1e-12)
    assert mad(torch.tensor(POS), torch.tensor(CTRL)) == pytest.approx(1 / math.sqrt(2 / 3), abs=1e-12)
    # a second latent: every positive above every control
    two = concept_scores(torch.tensor([[3.0, 5.0], [1.0, 6.0]]), torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
    assert two.auc.tolist() == [pytest.approx(0.75, abs=1e-12), 1.0]  # 3 beats both controls, 1 beats 0 only: 3 / 4
    assert two.mad[1].item() == pytest.approx((5.5 - 2.0) / math.sqrt(2.0), abs=1e-12)


def test_mad_is_null_when_the_controls_do_not_vary():
    s = concept_scores(torch.tensor([[1.0, 2.0], [2.0, 3.0]]), torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]]))
    assert math.isnan(s.mad[0].item()) and s.auc[0].item() == 1.0  # silent controls: AUC fine, MAD null
    assert s.mad[1].item() == pytest.approx((2.5 - 2.0) / 1.0)
    assert math.isnan(mad(torch.tensor([1.0]), torch.zeros(5)))
    # LINE keeps a finite value for ranking: its own floor on top of the shared implementation
    line = line_concept_scores(torch.tensor([[1.0], [2.0]]), torch.zeros(10, 1))
    assert math.isfinite(line.mad.item()) and line.mad.item() > 1e5


def test_mean_se_leaves_out_missing_values():
    assert mean_se([]) == {"mean": None, "se": None, "n": 0}
    assert mean_se([0.5, None, float("nan")]) == {"mean": 0.5, "se": None, "n": 1}
    out = mean_se([1.0, 2.0, 3.0, None])
    assert out["n"] == 3 and out["mean"] == pytest.approx(2.0) and out["se"] == pytest.approx(1 / math.sqrt(3))


def test_a_method_missing_latents_is_counted_as_missing_not_zero():
    latents = [0, 1, 2, 3]
    full = {k: ExplanationRecord.single(k, "full", "circle", cost=Cost(llm_calls=2)) for k in latents}
    partial = {0: ExplanationRecord.single(0, "partial", "circle", cost=Cost(llm_calls=4)),
               2: ExplanationRecord.single(2, "partial", None, reason="latent never fires"),
               9: ExplanationRecord.single(9, "partial", "star")}  # fmt: skip
    chosen, missing = select({"full": full, "partial": partial}, latents)
    assert missing == {"full": 0, "partial": 3} and list(chosen["partial"]) == [0]
    rows = [{"method": "partial", "latent": 0, "cosy_auc": 0.9, "simulation_r": 0.5}]
    table = method_table(rows, missing["partial"], [r.cost for r in chosen["partial"].values()])
    assert table["missing"] == 3
    assert table["cosy_auc"] == {"mean": 0.9, "se": None, "n": 1}  # not (0.9 + 0 + 0 + 0) / 4
    assert table["named_strict"]["n"] == 0 and table["cost"]["llm_calls"] == 4.0
