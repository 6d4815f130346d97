"""LE's maths: planted mixes recovered, closed form against LE's Adam procedure, guards, text."""

from __future__ import annotations

import pytest
import torch

from sae_lab.explainers.le.explain import CONSTANT, NEVER_FIRES, NO_POSITIVE, LeOptions, explain_latents
from sae_lab.explainers.le.fit import elastic_net, greedy_search, pearson, rank_concepts
from sae_lab.explainers.le.reference import reference_greedy, reference_greedy_batched
from sae_lab.run.records import Term, linear_text
from tests.helpers.threads import one_thread  # noqa: F401

N = 400
C = 12
M = 200


def parts(n: int) -> dict[str, torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    a, b = int(0.7 * n), int(0.8 * n)
    return {"fit": order[:a].sort().values, "select": order[a:b].sort().values, "heldout": order[b:].sort().values}


def sparse_presence(n: int, c: int, seed: int = 0) -> torch.Tensor:
    """Concepts present in ~40 % of images with a presence in [0.5, 1] (a VLM's sigmoid scores), else 0."""
    g = torch.Generator().manual_seed(seed)
    on = torch.rand(n, c, generator=g) < 0.4
    return on * (0.5 + 0.5 * torch.rand(n, c, generator=g))


def random_latents(p: torch.Tensor, m: int, seed: int = 0) -> torch.Tensor:
    """(N, M) targets, each a positive mix of 1–3 random concepts plus noise."""
    g = torch.Generator().manual_seed(seed)
    w = torch.zeros(p.shape[1], m)
    for j in range(m):
        k = int(torch.randint(1, 4, (1,), generator=g))
        w[torch.randperm(p.shape[1], generator=g)[:k], j] = 0.3 + torch.rand(k, generator=g)
    return p @ w + 0.1 * torch.randn(len(p), m, generator=g)


def test_planted_mix_is_recovered_with_its_weights():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(1000, C, generator=g)
    names = [f"c{i}" for i in range(C)]
    a, b = 3, 7
    y = (0.6 * p[:, a] + 0.3 * p[:, b] + 0.02 * torch.randn(1000, generator=g)).unsqueeze(1)
    (exp,) = explain_latents(p, names, y, parts(1000))
    assert [t.concept for t in exp.terms] == ["c3", "c7"]
    assert exp.terms[0].weight == pytest.approx(0.6, abs=0.05)
    assert exp.terms[1].weight == pytest.approx(0.3, abs=0.05)
    assert exp.bias == pytest.approx(0.0, abs=0.05)
    assert exp.select_r > 0.95 and exp.heldout_r > 0.95
    assert exp.candidates[0]["concept"] in ("c3", "c7") and len(exp.candidates) == 10
    assert exp.text.startswith("0.6") and "*c3 + 0.3" in exp.text and "*c7" in exp.text


def test_closed_form_greedy_chooses_what_les_adam_procedure_chooses():
    """≥ 95 % of 200 random latents get the same concept set from least squares as from 100 Adam epochs."""
    p = sparse_presence(N, C)
    y = random_latents(p, M)
    sp = parts(N)
    ranking = rank_concepts(elastic_net(p[sp["fit"]], y[sp["fit"]]))
    args = (p[sp["fit"]], y[sp["fit"]], p[sp["select"]], y[sp["select"]], ranking)
    ours, ref = greedy_search(*args), reference_greedy_batched(*args)
    same = [set(ours.concepts[j].tolist()) == set(ref.concepts[j].tolist()) for j in range(M)]
    assert sum(same) / M >= 0.95
    both = torch.tensor(same)
    # where the sets agree, Adam's 100 epochs land near the least-squares optimum
    assert (ours.select_r[both] - ref.select_r[both]).abs().max() < 0.01
    assert ours.length.float().mean() > 1.2  # the search does add second concepts


def test_batched_reference_is_les_per_candidate_nn_linear():
    p = sparse_presence(200, 8, seed=3)
    y = random_latents(p, 3, seed=3)
    sp = parts(200)
    ranking = rank_concepts(elastic_net(p[sp["fit"]], y[sp["fit"]]))
    args = (p[sp["fit"]], y[sp["fit"]], p[sp["select"]], y[sp["select"]], ranking)
    one, many = reference_greedy(*args), reference_greedy_batched(*args)
    assert torch.equal(one.concepts, many.concepts)
    torch.testing.assert_close(one.weights, many.weights, atol=1e-4, rtol=0)
    torch.testing.assert_close(one.select_r, many.select_r, atol=1e-5, rtol=0)


def test_elastic_net_ranks_the_planted_concepts_first_and_is_batch_independent():
    p = sparse_presence(N, C, seed=5)
    y = random_latents(p, 6, seed=5)
    w_all = elastic_net(p, y)
    w_one = elastic_net(p, y[:, 2:3])
    torch.testing.assert_close(w_all[2:3], w_one, atol=1e-9, rtol=0)  # each latent stops on its own
    truth = torch.linalg.lstsq(torch.cat([p, torch.ones(N, 1)], 1), y).solution[:C]
    top = rank_concepts(w_all)[:, 0]
    assert torch.equal(top, truth.argmax(0))


def test_guards_give_reasons_instead_of_explanations():
    p = sparse_presence(N, C, seed=2)
    sp = parts(N)
    y = torch.zeros(N, 4)
    y[:, 1] = 2.0  # constant
    y[sp["heldout"][:3], 2] = 1.0  # fires only on held-out images
    y[:, 3] = p.sum(1)
    p[sp["select"]] = 0.5  # no concept varies on the select images: r is undefined for every candidate
    out = explain_latents(p, [f"c{i}" for i in range(C)], y, sp)
    assert [e.reason for e in out] == [NEVER_FIRES, CONSTANT, CONSTANT, NO_POSITIVE]
    assert all(e.text is None and e.terms == [] for e in out)
    none = explain_latents(p[:, :0], [], y[:, 3:] * -1, sp)
    assert none[0].reason.startswith("no concept passed the filter")


def test_max_concepts_and_min_gain_bound_the_search():
    p = sparse_presence(N, C, seed=4)
    y = (p @ torch.linspace(1.0, 0.2, C)).unsqueeze(1)  # every concept matters, most a little
    sp = parts(N)
    (short,) = explain_latents(p, [f"c{i}" for i in range(C)], y, sp, LeOptions(max_concepts=3))
    (long,) = explain_latents(p, [f"c{i}" for i in range(C)], y, sp, LeOptions(min_gain=0.0))
    assert len(short.terms) == 3
    assert len(long.terms) > 3 and long.select_r >= short.select_r


def test_text_format():
    terms = [Term("spokes", 2.7412), Term("circle", 4.2371)]
    assert linear_text(terms, 0.333) == "4.24*circle + 2.74*spokes + 0.33"
    assert linear_text(terms, -0.5) == "4.24*circle + 2.74*spokes - 0.50"


def test_pearson_matches_numpy_and_flags_constants():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 3, generator=g, dtype=torch.float64), torch.randn(50, 3, generator=g, dtype=torch.float64)
    b[:, 2] = 1.0
    r = pearson(a, b)
    import numpy as np

    assert r[0].item() == pytest.approx(np.corrcoef(a[:, 0], b[:, 0])[0, 1], abs=1e-12)
    assert torch.isnan(r[2])


def test_elastic_net_meets_its_optimality_conditions_on_collinear_concepts():
    """KKT of 1/(2N)|y − xw|² + λα|w|₁ + λ(1−α)/2|w|² on standardised data, with a superclass column that is the
    sum of two class columns (exactly collinear once centred)."""
    from sae_lab.explainers.le.fit import _standardize

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (300,), generator=g)
    x = torch.nn.functional.one_hot(labels, 6).double()
    x = torch.cat([x, x[:, :2].sum(1, keepdim=True)], 1)
    y = x @ torch.tensor([1.0, 0.5, 0.0, 0.0, -0.3, 0.0, 0.8], dtype=torch.float64) + 0.1 * torch.randn(
        300, generator=g
    )
    y = torch.stack([y, -y, torch.randn(300, generator=g, dtype=torch.float64)], 1)
    lam, alpha = 0.05, 0.99
    w = elastic_net(x, y, lam, alpha)
    xs, ys = _standardize(x), _standardize(y)
    grad = -(xs.T @ (ys - xs @ w.T)) / len(xs) + lam * (1 - alpha) * w.T  # (C, M)
    on = w.T != 0
    assert on.any(), "some weights must survive the penalty"
    torch.testing.assert_close(grad[on], -lam * alpha * torch.sign(w.T[on]), atol=1e-6, rtol=0)
    assert (grad[~on].abs() <= lam * alpha + 1e-6).all()


def test_a_concept_constant_on_the_fit_images_is_never_chosen():
    p = sparse_presence(N, 4, seed=6)
    sp = parts(N)
    y = p[:, :1] + 0.05 * torch.randn(N, 1, generator=torch.Generator().manual_seed(0))
    p[:, 3] = 0.5  # constant on the fit images: least squares can only split the bias with it
    p[sp["select"], 3] = y[sp["select"], 0]  # would predict the select images perfectly, but is not in the fit
    (exp,) = explain_latents(p, ["a", "b", "c", "leak"], y, sp)
    assert "leak" not in [t.concept for t in exp.terms] and exp.terms[0].concept == "a"
