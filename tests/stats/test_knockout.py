import math

import numpy as np
import pytest
import torch

from sae_lab.models.tokens import fmap_to_tokens
from sae_lab.stats import (
    LatentStats,
    class_scores,
    closed_form_knockout,
    compare_knockout,
    image_activations,
    logit_lens,
    measured_knockout,
    pearson,
    rank_classes,
    zscore,
)

D_IN = 8
NUM_LATENTS = 16
NUM_CLASSES = 5
K = 4
B, H, W = 24, 3, 3
TOP_K_CLASSES = 3
QUANTILE = 0.5


class TinySae:
    """A hand-built Top-K SAE with the duck-typed interface the knockout needs."""

    def __init__(self, k: int = NUM_LATENTS, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.k = k
        self.W_enc = torch.randn(NUM_LATENTS, D_IN, generator=g)
        self.b_enc = torch.randn(NUM_LATENTS, generator=g) * 0.5
        W_dec = torch.randn(NUM_LATENTS, D_IN, generator=g)
        self.W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
        self.b_dec = torch.randn(D_IN, generator=g) * 0.1
        self.mu = torch.randn(D_IN, generator=g)
        self.sigma = torch.rand(D_IN, generator=g) + 0.5

    def standardize(self, x):
        return (x - self.mu) / self.sigma

    def unstandardize(self, x_tilde):
        return x_tilde * self.sigma + self.mu

    def dense_acts(self, x_tilde):
        return torch.relu((x_tilde - self.b_dec) @ self.W_enc.t() + self.b_enc)

    def encode(self, x_tilde):
        return self.dense_acts(x_tilde).topk(self.k, dim=1)

    def decode(self, latent_acts, latent_indices):
        codes = latent_acts.new_zeros(len(latent_acts), NUM_LATENTS).scatter(1, latent_indices, latent_acts)
        return codes @ self.W_dec + self.b_dec


class LinearPooledHead:
    """head(fmap) = mean over H, W, then a linear layer (SketchResNet's head at layer4)."""

    def __init__(self, seed: int = 1):
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(NUM_CLASSES, D_IN, generator=g)
        self.bias = torch.randn(NUM_CLASSES, generator=g)

    def __call__(self, fmap):
        return fmap.mean((2, 3)) @ self.weight.t() + self.bias


def feature_maps(seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D_IN, H, W, generator=g).relu() * 2


def test_logit_lens_matches_loops():
    sae, head = TinySae(), LinearPooledHead()
    lens = logit_lens(sae.W_dec, sae.sigma, head.weight)
    assert lens.shape == (NUM_LATENTS, NUM_CLASSES)
    for i in range(NUM_LATENTS):
        for c in range(NUM_CLASSES):
            expected = sum(head.weight[c, j].item() * sae.W_dec[i, j].item() * sae.sigma[j].item() for j in range(D_IN))
            assert lens[i, c].item() == pytest.approx(expected, abs=1e-5)
    mean_on = torch.rand(NUM_LATENTS)
    assert torch.allclose(closed_form_knockout(mean_on, lens), -mean_on[:, None] * lens)


def brute_force_z(row: list[float]) -> list[float]:
    mean = sum(row) / len(row)
    std = math.sqrt(sum((x - mean) ** 2 for x in row) / len(row))
    return [0.0 if std == 0 else (x - mean) / std for x in row]


def test_ranking_matches_loops():
    g = torch.Generator().manual_seed(0)
    pmi = torch.randn(NUM_LATENTS, NUM_CLASSES, generator=g, dtype=torch.float64)
    lens = torch.randn(NUM_LATENTS, NUM_CLASSES, generator=g, dtype=torch.float64)
    mean_on = torch.rand(NUM_LATENTS, generator=g, dtype=torch.float64)
    mean_on[0] = 0.0  # a latent that is never on: Δ⁻ ≡ 0, its z-score must be 0, not nan
    knockout = closed_form_knockout(mean_on, lens)
    score = class_scores(pmi, knockout, lens)
    top, anti = rank_classes(score, TOP_K_CLASSES)
    for i in range(NUM_LATENTS):
        z_pmi = brute_force_z(pmi[i].tolist())
        z_support = brute_force_z([-x for x in knockout[i].tolist()])
        z_w = brute_force_z(lens[i].tolist())
        expected = [z_pmi[c] + 2 * z_support[c] + z_w[c] for c in range(NUM_CLASSES)]
        assert score[i].tolist() == pytest.approx(expected)
        by_score = sorted(range(NUM_CLASSES), key=lambda c: -expected[c])
        assert top[i].tolist() == by_score[:TOP_K_CLASSES]
        assert anti[i].tolist() == by_score[::-1][:TOP_K_CLASSES]
    assert torch.equal(zscore(torch.full((2, 4), 3.7)), torch.zeros(2, 4, dtype=torch.float64))


def test_pearson_matches_numpy():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, generator=g), torch.randn(20, generator=g)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x.numpy(), y.numpy())[0, 1])
    assert math.isnan(pearson(torch.ones(1), torch.ones(1)))


def statistics(sae, fmap):
    """LatentStats over the same images, as the report would compute them."""
    token_acts = sae.dense_acts(sae.standardize(fmap_to_tokens(fmap))).reshape(B, H * W, NUM_LATENTS)
    stats = LatentStats(NUM_LATENTS, NUM_CLASSES, quantile=QUANTILE, n_exemplars=2)
    stats.update(token_acts, torch.arange(B) % NUM_CLASSES, torch.arange(B))
    return stats


def run_comparison(sae, head, fmap, **kwargs):
    lens = logit_lens(sae.W_dec, sae.sigma, head.weight)
    res = statistics(sae, fmap).compute(logit_lens=lens)
    z_max, _ = image_activations(sae, fmap, batch_size=5)
    on_mask = (z_max >= res.tau.float()) & (z_max > 0)
    assert torch.equal(on_mask.sum(0), res.n_on)
    top, _ = rank_classes(res.score, TOP_K_CLASSES)
    return res, compare_knockout(head, sae, fmap, lens, top, on_mask, batch_size=7, **kwargs)


def test_measured_knockout_equals_closed_form_when_top_k_is_dense():
    sae, head, fmap = TinySae(k=NUM_LATENTS), LinearPooledHead(), feature_maps()
    res, cmp = run_comparison(sae, head, fmap, mean_on_zavg=None)
    _, from_result = run_comparison(sae, head, fmap, mean_on_zavg=torch.zeros(NUM_LATENTS))
    assert len(cmp.latent) >= NUM_LATENTS * TOP_K_CLASSES // 2
    assert cmp.correlation > 0.95
    assert torch.allclose(cmp.measured, cmp.closed_form, atol=1e-4)
    assert torch.allclose(cmp.closed_form, res.knockout[cmp.latent, cmp.class_index], atol=1e-5)
    assert (cmp.num_images == res.n_on[cmp.latent]).all()
    assert torch.equal(from_result.closed_form, torch.zeros_like(from_result.closed_form))


def test_top_k_code_makes_the_measurement_differ():
    sae, head, fmap = TinySae(k=K), LinearPooledHead(), feature_maps()
    _, cmp = run_comparison(sae, head, fmap)
    assert math.isfinite(cmp.correlation)
    assert not torch.allclose(cmp.measured, cmp.closed_form, atol=1e-4)


def test_measured_knockout_skips_latents_without_on_images():
    sae, head, fmap = TinySae(), LinearPooledHead(), feature_maps()
    on_mask = torch.zeros(B, NUM_LATENTS, dtype=torch.bool)
    on_mask[:3, 1] = True
    measured, counts = measured_knockout(head, sae, fmap, [(0, 2), (1, 2), (1, 4)], on_mask)
    assert counts.tolist() == [0, 3, 3] and measured[0].isnan() and not measured[1:].isnan().any()


def test_real_top_k_sae_fits_the_interface():
    sae_module = pytest.importorskip("sae_lab.models.sae")
    torch.manual_seed(0)
    sae = sae_module.TopKSAE(sae_module.SaeConfig(d_in=D_IN, num_latents=NUM_LATENTS, k=NUM_LATENTS))
    fmap = feature_maps()
    tokens = fmap_to_tokens(fmap)
    sae.set_standardization(tokens.mean(0), tokens.std(0))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.5)
    head = LinearPooledHead()
    _, cmp = run_comparison(sae, head, fmap)
    assert cmp.correlation > 0.95
    assert torch.allclose(cmp.measured, cmp.closed_form, atol=1e-4)
