"""Rank score, similarity weight and final score against values worked out by hand."""

from __future__ import annotations

import pytest

from sae_lab.explainers.dnd import NO_HITS_WEIGHT, choose, final_scores, rank_candidates


def test_rank_and_final_scores_by_hand():
    # Three candidates' images; the joint ranking (descending activation) is
    #   rank: 0    1    2    3    4    5    6    7
    #   act : 9    8    7    6    5    4    3    1
    #   cand: A0   B0   A1   C0   B1   A2   B2   C1
    acts = [[9.0, 7.0, 4.0], [8.0, 5.0, 3.0], [6.0, 1.0]]
    r = rank_candidates(acts, beta=2, top_k=3)
    assert r.ranks == [[0, 2, 5], [1, 4, 6], [3, 7]]
    # beta = 2: mean squared rank of the best two.
    assert r.rank_scores == [pytest.approx((0 + 4) / 2), pytest.approx((1 + 16) / 2), pytest.approx((9 + 49) / 2)]
    assert r.positions == [0, 1, 2]
    assert r.hits == [[0, 1], [0], []]  # the joint top 3: A0, B0, A1
    weights = [0.5, 0.8, NO_HITS_WEIGHT]
    # (L − position) × weight with L = 3: A 3·0.5 = 1.5, B 2·0.8 = 1.6, C 1·(−1) = −1.
    assert final_scores(r.positions, weights) == pytest.approx([1.5, 1.6, -1.0])
    best = choose(["a", "b", "c"], r, weights, keep=3)
    assert [c.concept for c in best] == ["b", "a", "c"]
    assert best[0].score == pytest.approx(1.6) and best[0].rank_score == pytest.approx(8.5) and best[0].top_hits == 1
    assert [c.concept for c in choose(["a", "b", "c"], r, weights, keep=2)] == ["b", "a"]


def test_beta_five_fewer_images_ties_and_empty_candidates():
    r = rank_candidates([[1.0] * 7, [], [2.0]], beta=5, top_k=10)
    assert r.ranks == [[1, 2, 3, 4, 5, 6, 7], [], [0]]
    assert r.rank_scores == [pytest.approx((1 + 4 + 9 + 16 + 25) / 5), None, 0.0]  # the best five only
    assert r.positions == [1, 2, 0]  # no images: last
    tie = rank_candidates([[2.0], [2.0]], beta=5, top_k=1)
    assert tie.ranks == [[0], [1]] and tie.hits == [[0], []]  # equal activations: candidate order
    same = choose(["x", "y"], rank_candidates([[1.0], [0.5]]), [0.5, 1.0])
    assert [(c.concept, c.score) for c in same] == [("x", 1.0), ("y", 1.0)]  # equal scores: the better rank first
    with pytest.raises(ValueError, match="beta"):
        rank_candidates([[1.0]], beta=0)
    with pytest.raises(ValueError, match="finite"):
        rank_candidates([[float("nan")]])
    with pytest.raises(ValueError, match="weights"):
        choose(["x"], rank_candidates([[1.0]]), [])
