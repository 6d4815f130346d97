"""SAE validation metrics (torchmetrics) and the dead-latent tracker, against direct computations, in one
process and reduced over two gloo ranks."""

import json
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sae_lab.models.metrics import FractionOfVarianceUnexplained, SpliceMetrics
from sae_lab.models.sae import SaeConfig, TopKSAE
from sae_lab.models.tokens import fmap_to_tokens, tokens_to_fmap
from sae_lab.models.trackers import DeadLatentTracker
from tests.helpers.threads import one_thread  # noqa: F401  (autouse)

D_IN = 8
NUM_LATENTS = 32
K = 3
NUM_CLASSES = 4
H = W = 2
BATCH_SIZES = (5, 7, 3, 6, 4)  # rank 0 takes batches 0, 2, 4 and rank 1 batches 1, 3: unequal shares
WINDOW = 40


def world():
    """A tiny SAE, a pool + linear head, feature maps, labels and the mean-ablation reference."""
    torch.manual_seed(0)
    sae = TopKSAE(SaeConfig(D_IN, NUM_LATENTS, K))
    g = torch.Generator().manual_seed(1)
    fmaps = [torch.randn(b, D_IN, H, W, generator=g).relu() for b in BATCH_SIZES]
    tokens = fmap_to_tokens(torch.cat(fmaps))
    sae.set_standardization(tokens.mean(0), tokens.std(0))
    head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(D_IN, NUM_CLASSES))
    with torch.no_grad():  # mostly the classifier's own answers, so that accuracies differ from chance
        labels = [head(f).argmax(-1) for f in fmaps]
    for y in labels:
        flip = torch.rand(len(y), generator=g) < 0.3
        y[flip] = torch.randint(0, NUM_CLASSES, (int(flip.sum()),), generator=g)
    return sae, head, fmaps, labels, tokens.mean(0)


@torch.no_grad()
def direct_figures(sae, head, fmaps, labels, fmap_mean) -> dict[str, float]:
    """Every figure of DESIGN's definitions, computed over all images at once (no metric code)."""
    fmap, y = torch.cat(fmaps), torch.cat(labels)
    x = sae.standardize(fmap_to_tokens(fmap))
    out = sae(x)
    xd, x_hat = x.double(), out.x_hat.double()
    on = out.latent_acts > 0
    orig = head(fmap)
    spliced = head(tokens_to_fmap(sae.unstandardize(out.x_hat), fmap.shape))
    ablated = head(fmap_mean.view(1, -1, 1, 1).expand_as(fmap))
    acc = {name: (logits.argmax(-1) == y).double().mean().item()
           for name, logits in (("orig", orig), ("spliced", spliced), ("ablated", ablated))}  # fmt: skip
    p, q = orig.double().log_softmax(-1), spliced.double().log_softmax(-1)
    return {
        "fvu": float(((xd - x_hat) ** 2).sum() / ((xd - xd.mean(0)) ** 2).sum()),
        "l0": float(on.sum(1).double().mean()),
        "dead_frac": 1 - len(out.latent_indices[on].unique()) / NUM_LATENTS,
        "acc_orig": acc["orig"],
        "acc_spliced": acc["spliced"],
        "acc_mean_ablated": acc["ablated"],
        "acc_recovered": (acc["spliced"] - acc["ablated"]) / gap
        if (gap := acc["orig"] - acc["ablated"])
        else float("nan"),
        "kl": float((p.exp() * (p - q)).sum() / len(y)),
    }


def assert_figures_close(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    # float32 forward passes over batches vs over everything: FVU and KL agree to float32 rounding.
    assert got["fvu"] == pytest.approx(want["fvu"], rel=1e-5)
    assert got["kl"] == pytest.approx(want["kl"], rel=1e-4, abs=1e-7)
    for key in ("l0", "dead_frac", "acc_orig", "acc_spliced", "acc_mean_ablated", "acc_recovered"):
        assert got[key] == pytest.approx(want[key], rel=1e-12, nan_ok=True), key


def test_fvu_over_chunks_is_the_float64_fvu_of_everything():
    g = torch.Generator().manual_seed(2)
    x, x_hat = torch.randn(96, D_IN, generator=g) + 3.0, torch.randn(96, D_IN, generator=g)
    direct = ((x.double() - x_hat.double()) ** 2).sum() / ((x.double() - x.double().mean(0)) ** 2).sum()
    fvu = FractionOfVarianceUnexplained(D_IN)
    for xs, hs in zip(x.split(17), x_hat.split(17)):
        fvu.update(xs, hs)
    assert fvu.compute().dtype == torch.float64
    assert fvu.compute().item() == pytest.approx(direct.item(), rel=1e-10)
    fvu.reset()
    fvu.update(x, x.mean(0).expand_as(x))
    assert fvu.compute().item() == pytest.approx(1.0, abs=1e-9)  # predicting the mean
    fvu.reset()
    fvu.update(x, x)
    assert fvu.compute().item() == 0.0


def test_splice_metrics_over_batches_match_the_direct_computation():
    sae, head, fmaps, labels, fmap_mean = world()
    metrics = SpliceMetrics(D_IN, NUM_LATENTS)
    for f, y in zip(fmaps, labels):
        metrics.update(sae, head, f, y, fmap_mean)
    assert_figures_close(metrics.compute(), direct_figures(sae, head, fmaps, labels, fmap_mean))
    metrics.reset()  # a new epoch starts from nothing
    metrics.update(sae, head, fmaps[0], labels[0], fmap_mean)
    assert_figures_close(metrics.compute(), direct_figures(sae, head, fmaps[:1], labels[:1], fmap_mean))


class IdentitySae:
    """Stands in for an SAE that reconstructs perfectly (or predicts the mean, with `mean=True`); only
    latent 0 fires."""

    def __init__(self, mean: bool = False):
        self.mean = mean

    def standardize(self, x):
        return x

    def unstandardize(self, x):
        return x

    def __call__(self, x):
        x_hat = x.mean(0, keepdim=True).expand_as(x) if self.mean else x
        return SimpleNamespace(
            x_hat=x_hat, latent_acts=torch.ones(len(x), 2), latent_indices=torch.zeros(len(x), 2).long()
        )


def test_perfect_sae_gives_fvu_0_full_recovery_and_no_kl():
    _, head, fmaps, labels, _ = world()
    metrics = SpliceMetrics(D_IN, 4)
    metrics.update(IdentitySae(), head, fmaps[0], labels[0], fmap_mean=torch.zeros(D_IN))
    figures = metrics.compute()
    assert figures["fvu"] == pytest.approx(0.0, abs=1e-12)
    assert figures["acc_spliced"] == figures["acc_orig"] and figures["kl"] == pytest.approx(0.0, abs=1e-6)
    assert figures["dead_frac"] == 0.75 and figures["l0"] == 2.0
    mean = SpliceMetrics(D_IN, 4)
    mean.update(IdentitySae(mean=True), head, fmaps[0], labels[0], fmap_mean=torch.zeros(D_IN))
    assert mean.compute()["fvu"] == pytest.approx(1.0)


def step_codes(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank `rank`'s Top-K codes (N, K) at a training step; latent 5 fires only on rank 1, latent 9 never."""
    g = torch.Generator().manual_seed(100 * step + rank)
    n = 6 + 4 * rank
    indices = torch.stack([torch.randperm(NUM_LATENTS, generator=g)[:K] for _ in range(n)])
    indices[indices == 9] = 0
    indices[indices == 5] = 1
    acts = torch.rand(n, K, generator=g) * (torch.rand(n, K, generator=g) > 0.3)
    if rank == 1 and step % 3 == 0:
        indices[0, 0], acts[0, 0] = 5, 1.0
    return acts, indices


def test_dead_latents_are_those_silent_for_the_last_window_tokens():
    tracker = DeadLatentTracker(NUM_LATENTS, WINDOW)
    assert not tracker.compute().any()
    acts, indices = torch.ones(10, K), torch.tensor([[0, 1, 2]] * 10)
    for step in range(1, 5):
        tracker.update(acts, indices)
        dead = tracker.compute()
        assert not dead[:3].any() and dead[3:].all() == (10 * step >= WINDOW)
    assert tracker.tokens_since_fired[3:].eq(40).all() and tracker.tokens_since_fired[:3].eq(0).all()
    tracker.update(torch.zeros(5, K), indices[:5])  # zero activations do not count as firing
    assert tracker.tokens_since_fired[0] == 5
    tracker.reset(torch.tensor([7]))
    assert not tracker.compute()[7] and tracker.usage_ema[7] == 1 / NUM_LATENTS


def test_tracker_state_round_trips():
    tracker = DeadLatentTracker(NUM_LATENTS, WINDOW)
    for step in range(4):
        tracker.update(*step_codes(step, 0))
    restored = DeadLatentTracker(NUM_LATENTS, WINDOW)
    restored.load_state_dict(tracker.state_dict())
    assert torch.equal(restored.tokens_since_fired, tracker.tokens_since_fired)
    assert torch.equal(restored.usage_ema, tracker.usage_ema)
    with pytest.raises(ValueError, match="latents"):
        DeadLatentTracker(NUM_LATENTS + 1, WINDOW).load_state_dict(tracker.state_dict())


STEPS = 8  # latent 5 fires on rank 1 at steps 0, 3, 6: alive globally, but silent for 48 of rank 0's tokens


def _gloo_worker(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        sae, head, fmaps, labels, fmap_mean = world()
        metrics = SpliceMetrics(D_IN, NUM_LATENTS)
        for i in range(rank, len(fmaps), 2):
            metrics.update(sae, head, fmaps[i], labels[i], fmap_mean)
        tracker = DeadLatentTracker(NUM_LATENTS, WINDOW)
        for step in range(STEPS):
            tracker.update(*step_codes(step, rank))
        record = {"figures": metrics.compute(), "tokens_since_fired": tracker.tokens_since_fired.tolist(),
                  "usage_ema": tracker.usage_ema.tolist()}  # fmt: skip
        with open(f"{out}.{rank}", "w") as f:
            json.dump(record, f)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_reduce_to_the_figures_of_all_the_data(tmp_path):
    # fork, not spawn: the children skip re-importing torch (seconds); they use one thread, as DataLoader workers do.
    args = (str(tmp_path / "store"), str(tmp_path / "rank"))
    mp.start_processes(_gloo_worker, args=args, nprocs=2, join=True, start_method="fork")
    ranks = [json.loads((tmp_path / f"rank.{r}").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # one figure and one dead-latent count, on every rank
    sae, head, fmaps, labels, fmap_mean = world()
    assert_figures_close(ranks[0]["figures"], direct_figures(sae, head, fmaps, labels, fmap_mean))
    # The tracker counts the tokens of both ranks: one process fed both ranks' codes step by step agrees.
    single = DeadLatentTracker(NUM_LATENTS, WINDOW)
    for step in range(STEPS):
        (a0, i0), (a1, i1) = step_codes(step, 0), step_codes(step, 1)
        single.update(torch.cat([a0, a1]), torch.cat([i0, i1]))
    assert ranks[0]["tokens_since_fired"] == single.tokens_since_fired.tolist()
    assert ranks[0]["usage_ema"] == pytest.approx(single.usage_ema.tolist(), rel=1e-6)
    dead = single.compute()
    assert dead[9] and not dead[5]  # latent 5 fires on rank 1 only, yet it is alive everywhere
