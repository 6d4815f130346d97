import math

import pytest
import torch

from sae_lab.data.world import PRIMITIVES, SketchWorld
from sae_lab.models.tokens import fmap_to_tokens
from sae_lab.stats import (
    LatentStats,
    best_primitive,
    histogram_auc,
    mad,
    pool_masks,
    rank_auc,
    recovered_primitives,
    roc_auc,
    token_bin_edges,
)
from sae_lab.stats.ground_truth import bin_index

D_IN = 8
NUM_LATENTS = 16
NUM_PRIMITIVES = 4
T = 16
N_IMAGES = 50
IMAGE_SIZE = 32
GRID = (4, 4)
PLANTED_LATENT = 5
PLANTED_PRIMITIVE = PRIMITIVES.index("circle")


def brute_force_auc(pos: list[float], neg: list[float]) -> float:
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_roc_auc_hand_example():
    pos, neg = torch.tensor([0.9, 0.8, 0.4]), torch.tensor([0.5, 0.4, 0.1])
    # 0.9 and 0.8 beat all three; 0.4 loses to 0.5, ties 0.4, beats 0.1 → (3 + 3 + 1.5) / 9
    assert roc_auc(pos, neg) == pytest.approx(7.5 / 9)
    assert roc_auc(torch.ones(4), torch.ones(3)) == 0.5
    assert roc_auc(torch.tensor([2.0]), torch.tensor([1.0])) == 1.0
    assert math.isnan(roc_auc(torch.tensor([1.0]), torch.tensor([])))


@pytest.mark.parametrize("seed", range(3))
def test_roc_auc_matches_pairwise_count(seed):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randint(0, 6, (17,), generator=g).float()  # few distinct values: many ties
    neg = torch.randint(0, 5, (23,), generator=g).float()
    assert roc_auc(pos, neg) == pytest.approx(brute_force_auc(pos.tolist(), neg.tolist()))


def test_rank_auc_columns_match_roc_auc():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (30, 5), generator=g).float()
    scores[:, 4] = 1.0  # a constant column: AUC 0.5
    labels = torch.rand(30, 3, generator=g) < 0.4
    auc = rank_auc(scores, labels)
    assert auc.shape == (5, 3)
    for m in range(5):
        for p in range(3):
            expected = brute_force_auc(scores[labels[:, p], m].tolist(), scores[~labels[:, p], m].tolist())
            assert auc[m, p].item() == pytest.approx(expected)
    assert torch.allclose(auc[4], torch.full((3,), 0.5, dtype=torch.float64))
    assert rank_auc(scores, torch.ones(30, 1, dtype=torch.bool)).isnan().all()


def test_mad():
    assert mad(torch.tensor([2.0, 4.0]), torch.tensor([1.0, 2.0, 3.0])) == pytest.approx(1.0)
    assert mad(torch.tensor([1.0]), torch.tensor([1.0, 2.0, 3.0])) == pytest.approx(-1.0)


def test_bins_have_an_exact_zero_bin():
    edges = token_bin_edges()
    assert len(edges) == 8 * 64 + 1 and edges[0] == pytest.approx(1e-4) and edges[-1] == pytest.approx(1e4)
    idx = bin_index(torch.tensor([0.0, 1e-9, 1.01e-4, 1.0, 1.1, 1e9]), edges)
    assert idx[0] == 0 and idx[1] == 1 and idx[2] == 2 and idx[3] < idx[4] and idx[5] == len(edges) + 1
    values = torch.cat([torch.zeros(100), torch.randn(10_000, generator=torch.Generator().manual_seed(0)).mul(4).exp()])
    searched = torch.where(values > 0, torch.bucketize(values, edges.float(), right=True) + 1, 0)  # by definition
    diff = bin_index(values, edges) - searched  # the geometric fast path may differ by rounding right at an edge
    assert diff.abs().max() <= 1 and (diff != 0).float().mean() < 1e-3
    uneven = torch.tensor([0.1, 0.2, 1.0, 5.0], dtype=torch.float64)
    assert bin_index(torch.tensor([0.0, 0.05, 0.1, 0.5, 7.0]), uneven).tolist() == [0, 1, 2, 3, 5]
    grid = values[:10_000].reshape(100, 100)
    for dtype, bins in ((torch.float32, edges), (torch.float16, edges), (torch.float32, uneven)):
        offsets = torch.arange(100) * (len(bins) + 2)  # one flat id space for every latent's bins
        assert torch.equal(bin_index(grid.to(dtype), bins, offsets), bin_index(grid.to(dtype), bins) + offsets)
    assert len(token_bin_edges(10)) == 11
    with pytest.raises(ValueError):
        token_bin_edges(torch.tensor([1.0, 0.5]))


def test_histogram_auc_counts_same_bin_as_half():
    pos = torch.tensor([1, 2, 1])  # one positive in bin 0, two in bin 1, one in bin 2
    neg = torch.tensor([3, 1, 0])
    # bin 0: ties with 3 negatives → 1.5; bin 1: 3 below + 0.5·1 each → 7; bin 2: 4 below → 4
    assert histogram_auc(pos, neg).item() == pytest.approx((1.5 + 7 + 4) / (4 * 4))


def random_token_data(seed: int = 0):
    """Token activations with exact zeros whose positive part is shifted up on each primitive's mask."""
    g = torch.Generator().manual_seed(seed)
    present = torch.rand(N_IMAGES, 1, NUM_PRIMITIVES, generator=g) < 0.5
    masks = present & (torch.rand(N_IMAGES, T, NUM_PRIMITIVES, generator=g) < 0.4)
    weights = torch.randn(NUM_PRIMITIVES, NUM_LATENTS, generator=g)
    signal = masks.float() @ weights
    acts = (torch.randn(N_IMAGES, T, NUM_LATENTS, generator=g) + 0.7 * signal).exp()
    acts = torch.where(torch.rand(acts.shape, generator=g) < 0.4 - 0.1 * signal.clamp(-2, 2), 0.0, acts)
    return acts, masks


def test_token_auc_from_histograms_is_close_to_exact():
    acts, masks = random_token_data()
    stats = LatentStats(NUM_LATENTS, 3, num_primitives=NUM_PRIMITIVES, n_exemplars=2)
    labels = torch.zeros(N_IMAGES, dtype=torch.long)
    for start in range(0, N_IMAGES, 16):
        sl = slice(start, start + 16)
        stats.update(acts[sl], labels[sl], torch.arange(N_IMAGES)[sl], token_masks=masks[sl], token_chunk=100)
    res = stats.compute()
    exact = rank_auc(acts.reshape(-1, NUM_LATENTS), masks.reshape(-1, NUM_PRIMITIVES))
    assert (res.token_auc - exact).abs().max() < 0.01
    assert exact.min() < 0.35 and exact.max() > 0.65  # the data has real signal both ways
    assert torch.allclose(res.image_auc, rank_auc(acts.amax(1), masks.any(1)))  # primitives from token masks
    for m, p in [(0, 0), (7, 3)]:  # spot check against the pairwise definition
        flat, on = acts[..., m].flatten(), masks[..., p].flatten()
        assert exact[m, p].item() == pytest.approx(brute_force_auc(flat[on].tolist(), flat[~on].tolist()))


@pytest.mark.parametrize("token_bins", [None, torch.tensor([0.1, 0.2, 1.0, 5.0], dtype=torch.float64)])
def test_token_histograms_equal_a_plain_bincount_with_an_exact_zero_bin(token_bins):
    acts, masks = random_token_data(seed=3)
    acts[0, :4] = torch.tensor([1e-9, 1e-6, 5e-5, 0.0])[:, None]  # positive values below the first edge, and a zero
    stats = LatentStats(NUM_LATENTS, 3, num_primitives=NUM_PRIMITIVES, n_exemplars=2, token_bins=token_bins)
    labels = torch.zeros(N_IMAGES, dtype=torch.long)
    for start in range(0, N_IMAGES, 16):
        sl = slice(start, start + 16)
        stats.update(acts[sl], labels[sl], torch.arange(N_IMAGES)[sl], token_masks=masks[sl], token_chunk=100)
    idx = bin_index(acts.reshape(-1, NUM_LATENTS), stats.edges)  # exact zeros in bin 0, by definition
    nb, on = stats.num_bins, masks.reshape(-1, NUM_PRIMITIVES)
    want_all = torch.stack([torch.bincount(idx[:, m], minlength=nb) for m in range(NUM_LATENTS)])
    want_on = torch.stack(
        [torch.stack([torch.bincount(idx[on[:, p], m], minlength=nb) for m in range(NUM_LATENTS)])
         for p in range(NUM_PRIMITIVES)]
    )  # fmt: skip
    assert torch.equal(stats.hist_all.view(NUM_LATENTS, nb), want_all)
    assert torch.equal(stats.hist_on.view(NUM_PRIMITIVES, NUM_LATENTS, nb), want_on)
    assert want_all[:, 0].sum() == (acts == 0).sum() and want_all[:, 1].sum() >= 3


def test_pool_masks_follows_token_order():
    masks = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    masks[0, 0, 0, 3] = True  # top-right pixel → token (h=0, w=1)
    masks[0, 1, 2:, :2] = True  # bottom-left cell, half the pixels in the cell above-left border none
    tokens = pool_masks(masks, (2, 2))
    assert tokens.shape == (1, 4, 2)
    assert tokens[0, :, 0].tolist() == [False, True, False, False]
    assert tokens[0, :, 1].tolist() == [False, False, True, False]
    assert not pool_masks(masks, (2, 2), min_fraction=0.5)[0, :, 0].any()
    fmap = torch.arange(4.0).reshape(1, 1, 2, 2)  # the masks' token order is the SAE's
    assert fmap_to_tokens(fmap)[1, 0] == fmap[0, 0, 0, 1]


class PlantedSae:
    """SAE-like: tokens are already standardised; latent PLANTED_LATENT reads channel 0, the others are random."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.W_enc = torch.randn(NUM_LATENTS, D_IN, generator=g)
        self.b_enc = torch.randn(NUM_LATENTS, generator=g)
        self.W_enc[PLANTED_LATENT] = torch.nn.functional.one_hot(torch.tensor(0), D_IN).float()
        self.b_enc[PLANTED_LATENT] = 0.0

    def dense_acts(self, x_tilde):
        return torch.relu(x_tilde @ self.W_enc.t() + self.b_enc)


def test_planted_latent_recovers_its_primitive():
    world = SketchWorld(image_size=IMAGE_SIZE, seed=0)
    samples = [world.sample(i) for i in range(2 * world.num_classes)]
    masks = pool_masks(torch.stack([torch.from_numpy(s.masks) for s in samples]), GRID)  # (B, T, P)
    primitives = torch.stack([torch.from_numpy(s.primitives).bool() for s in samples])
    labels = torch.tensor([s.label for s in samples])
    b, t = masks.shape[:2]
    g = torch.Generator().manual_seed(1)
    tokens = torch.randn(b, t, D_IN, generator=g)
    tokens[..., 0] = masks[..., PLANTED_PRIMITIVE].float()  # channel 0 = the primitive's pooled mask
    acts = PlantedSae().dense_acts(tokens.reshape(b * t, D_IN)).reshape(b, t, NUM_LATENTS)
    assert torch.equal(acts[..., PLANTED_LATENT], masks[..., PLANTED_PRIMITIVE].float())

    stats = LatentStats(NUM_LATENTS, world.num_classes, num_primitives=world.num_primitives)
    stats.update(acts, labels, torch.arange(b), primitives, masks)
    res = stats.compute()
    assert res.image_auc[PLANTED_LATENT, PLANTED_PRIMITIVE] == 1.0
    assert res.token_auc[PLANTED_LATENT, PLANTED_PRIMITIVE] == 1.0
    match = best_primitive(res.image_auc, res.token_auc)
    assert match.primitive[PLANTED_LATENT] == PLANTED_PRIMITIVE and match.token_auc[PLANTED_LATENT] == 1.0
    table = recovered_primitives(res.image_auc)
    assert table.recovered[PLANTED_PRIMITIVE] and table.latent[PLANTED_PRIMITIVE] == PLANTED_LATENT


def test_best_primitive_and_recovered_table():
    auc = torch.tensor([[0.5, 0.95, float("nan")], [0.7, 0.6, float("nan")], [float("nan")] * 3], dtype=torch.float64)
    token = torch.full_like(auc, 0.8)
    match = best_primitive(auc, token)
    assert match.primitive.tolist() == [1, 0, -1]
    assert match.image_auc[:2].tolist() == [0.95, 0.7] and match.image_auc[2].isnan()
    assert match.token_auc[:2].tolist() == [0.8, 0.8] and match.token_auc[2].isnan()
    assert best_primitive(auc).token_auc.isnan().all()
    table = recovered_primitives(auc, threshold=0.9)
    assert table.latent.tolist() == [1, 0, -1]
    assert table.recovered.tolist() == [False, True, False]
    assert table.auc[2].isnan() and table.auc[1] == 0.95
