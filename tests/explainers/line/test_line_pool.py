"""The LINE pool update rule."""

import math

import numpy as np
import pytest

from sae_lab.explainers.line.pool import Pool, ScoredConcept
from tests.explainers.line.line_fixtures import *  # noqa: F403 -- the LINE fixtures (autouse ones included)


def sc(concept: str, score: float, mean: float = 0.0, iteration: int = 0) -> ScoredConcept:
    return ScoredConcept(concept, score, score, 0.0, mean, iteration, 8)


def full_pool(scores=(0.9, 0.8, 0.7, 0.6, 0.5)) -> Pool:
    return Pool(len(scores), [sc(f"c{i}", s) for i, s in enumerate(scores)])


def test_fills_up_to_capacity_and_ignores_repeats():
    pool = Pool(3)
    rng = np.random.default_rng(0)
    for name, score in [("a", 0.5), ("b", 0.7), ("a", 0.99)]:
        assert pool.update(sc(name, score), rng) is None
    assert [c.concept for c in pool.sorted()] == ["b", "a"]
    assert pool.best().score == 0.7  # the repeat of "a" did not replace its first score


def test_a_better_concept_evicts_the_worst():
    pool = full_pool()
    evicted = pool.update(sc("new", 0.55), np.random.default_rng(0))
    assert evicted.concept == "c4" and len(pool) == 5 and "new" in pool


def test_a_worse_concept_evicts_a_random_member_but_never_the_best():
    evicted = set()
    for seed in range(200):
        pool = full_pool()
        out = pool.update(sc("new", 0.1), np.random.default_rng(seed))
        assert out is not None and out.concept != "c0" and "new" in pool and len(pool) == 5
        assert pool.best().concept == "c0"
        evicted.add(out.concept)
    assert evicted == {"c1", "c2", "c3", "c4"}  # random, not always the worst


def test_eviction_weights_follow_the_score_gap():
    pool = full_pool()
    new = sc("new", 0.4)
    w = pool.eviction_weights(new)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    tau = scores.std()
    expected = np.exp(-(scores - 0.4) / tau)
    expected[0] = 0.0
    assert w == pytest.approx(expected / expected.sum())
    assert w[4] > w[3] > w[2] > w[1] > w[0] == 0.0  # close to the newcomer: likely to go
    counts = np.zeros(5)
    for seed in range(2000):
        p = full_pool()
        counts[[c.concept for c in p.items].index(p.update(new, np.random.default_rng(seed)).concept)] += 1
    assert counts / counts.sum() == pytest.approx(w, abs=0.03)


def test_argmax_is_the_best_concept_ever_seen():
    rng = np.random.default_rng(1)
    pool = Pool(4)
    seen = []
    for i in range(50):
        concept = sc(f"x{i}", float(rng.uniform()), iteration=i)
        seen.append(concept)
        pool.update(concept, rng)
        assert pool.best().score == max(c.score for c in seen)
        assert len(pool) == min(i + 1, 4)


def test_ties_break_on_mean_activation_and_nan_ranks_last():
    pool = Pool(3, [sc("a", 1.0, mean=2.0), sc("b", 1.0, mean=5.0), sc("c", math.nan)])
    assert [c.concept for c in pool.sorted()] == ["b", "a", "c"]


def test_round_trip_through_json_rows():
    pool = Pool(3, [sc("a", 0.3), ScoredConcept("b", math.nan, math.nan, math.nan, math.nan, 2, 0)])
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in pool.to_list()]
    back = Pool.from_list(rows, 3)
    assert back.items[0] == pool.items[0] and math.isnan(back.items[1].score)
