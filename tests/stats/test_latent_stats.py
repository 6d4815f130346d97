import dataclasses
import math

import pytest
import torch

from sae_lab.backends.text.stats_block import format_stats_block, parse_stats_block
from sae_lab.stats import (
    ChunkedRows,
    LatentStats,
    LatentStatsResult,
    gather_latent_stats,
    latent_summary,
    quantile_linear,
    select_top,
)
from sae_lab.stats.exemplars import TopExemplars

NUM_LATENTS = 16
NUM_CLASSES = 5
NUM_PRIMITIVES = 4
T = 9  # a 3×3 token grid
N_IMAGES = 40
N_EXEMPLARS = 4
QUANTILE = 0.9
DEAD = 3  # a latent that never fires


def make_batch(n: int = N_IMAGES, seed: int = 0):
    """Sparse non-negative token activations with many exact zeros and ties, plus labels, ids and ground truth."""
    g = torch.Generator().manual_seed(seed)
    acts = (torch.randn(n, T, NUM_LATENTS, generator=g) - 0.8).relu()
    acts = (acts * 4).round() / 4  # ties between images
    acts[:, :, DEAD] = 0
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    ids = torch.randperm(10 * n, generator=g)[:n]
    masks = torch.rand(n, T, NUM_PRIMITIVES, generator=g) < 0.3
    return acts, labels, ids, masks.any(1), masks


def one_pass(batches, **kwargs) -> LatentStats:
    stats = new_stats(**kwargs)
    for acts, labels, ids, prims, masks in batches:
        stats.update(acts, labels, ids, prims, masks)
    return stats


def new_stats(**kwargs) -> LatentStats:
    kwargs = {"quantile": QUANTILE, "n_exemplars": N_EXEMPLARS, "num_primitives": NUM_PRIMITIVES, **kwargs}
    return LatentStats(NUM_LATENTS, NUM_CLASSES, **kwargs)


def split(batch, sizes):
    out, start = [], 0
    for size in sizes:
        out.append(tuple(x[start : start + size] for x in batch))
        start += size
    return out


def assert_results_equal(a: LatentStatsResult, b: LatentStatsResult):
    for field in dataclasses.fields(LatentStatsResult):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            assert torch.allclose(x, y, atol=1e-9, equal_nan=True), field.name
        elif isinstance(x, torch.Tensor):
            assert torch.equal(x, y), field.name
        else:
            assert x == y, field.name


def test_statistics_match_brute_force():
    acts, labels, ids, prims, masks = batch = make_batch()
    res = one_pass([batch]).compute()
    n = N_IMAGES
    for i in range(NUM_LATENTS):
        a = acts[:, :, i]
        z_max = [a[b].max().item() for b in range(n)]
        z_avg = [a[b].mean().item() for b in range(n)]
        fires = a[a > 0]
        assert res.frequency[i] == pytest.approx(len(fires) / (n * T))
        assert res.image_frequency[i] == pytest.approx(sum(z > 0 for z in z_max) / n)
        assert res.mean_act[i] == pytest.approx(fires.sum().item() / len(fires) if len(fires) else 0.0)
        tau = torch.quantile(torch.tensor(z_max, dtype=torch.float64), QUANTILE).item()
        assert res.tau[i] == pytest.approx(tau)
        on = [b for b in range(n) if z_max[b] >= tau and z_max[b] > 0]
        assert res.n_on[i] == len(on)
        assert res.mean_on_zavg[i] == pytest.approx(sum(z_avg[b] for b in on) / len(on) if on else 0.0)
        for c in range(NUM_CLASSES):
            n_c = sum(int(labels[b]) == c for b in range(n))
            n_ic = sum(int(labels[b]) == c for b in on)
            assert res.class_counts[c] == n_c and res.class_on_counts[i, c] == n_ic
            assert res.class_fire_counts[i, c] == sum(int(labels[b]) == c and z_max[b] > 0 for b in range(n))
            p_c = (n_c + 1) / (n + NUM_CLASSES)
            p_c_on = (n_ic + 1) / (len(on) + NUM_CLASSES)
            assert res.pmi[i, c] == pytest.approx(math.log(p_c_on / p_c))
        shares = [sum(int(labels[b]) == c for b in on) / len(on) for c in range(NUM_CLASSES)] if on else []
        entropy = -sum(p * math.log(p) for p in shares if p > 0)
        assert res.monosemanticity[i] == pytest.approx(1 - entropy / math.log(NUM_CLASSES) if on else 0.0)
    assert res.num_images == n and res.num_tokens == n * T


def test_dead_latent_is_never_on():
    res = one_pass([make_batch()]).compute()
    assert res.tau[DEAD] == 0 and res.n_on[DEAD] == 0 and res.mean_on_zavg[DEAD] == 0
    assert res.frequency[DEAD] == 0 and res.monosemanticity[DEAD] == 0
    p_c = (res.class_counts.double() + 1) / (N_IMAGES + NUM_CLASSES)
    assert torch.allclose(res.pmi[DEAD], -(NUM_CLASSES * p_c).log())  # P(c | on) = 1/C with no on-image


def test_exemplars_are_the_true_top_n():
    acts, labels, ids, prims, masks = batch = make_batch()
    res = one_pass(split(batch, [7, 13, 20])).compute()
    z_max = acts.amax(1)
    for i in range(NUM_LATENTS):
        ranked = sorted(range(N_IMAGES), key=lambda b: (-z_max[b, i].item(), ids[b].item()))[:N_EXEMPLARS]
        assert res.exemplar_ids[i].tolist() == [ids[b].item() for b in ranked]
        assert res.exemplar_labels[i].tolist() == [labels[b].item() for b in ranked]
        assert res.exemplar_z_max[i].tolist() == [z_max[b, i].item() for b in ranked]
        assert torch.equal(res.exemplar_maps[i], acts[ranked, :, i])


def test_exemplar_slots_pad_when_few_images():
    acts, labels, ids, prims, masks = make_batch(2)
    res = one_pass([(acts, labels, ids, prims, masks)]).compute()
    assert (res.exemplar_ids[:, 2:] == -1).all() and torch.isinf(res.exemplar_z_max[:, 2:]).all()
    assert set(res.exemplar_ids[:, :2].flatten().tolist()) == set(ids.tolist())


@pytest.mark.parametrize("seed", range(5))
def test_narrowed_exemplar_choice_equals_the_full_sort_under_ties(seed):
    g = torch.Generator().manual_seed(seed)
    values = (torch.rand(30, 60, generator=g) * 5).round()  # six distinct values: ties everywhere
    values[::3, :4] = -torch.inf  # empty slots
    ids = torch.stack([torch.randperm(1000, generator=g)[:60] for _ in range(30)])
    chosen = TopExemplars(30, N_EXEMPLARS)._choose(values, ids)
    assert torch.equal(chosen, select_top(values, ids, N_EXEMPLARS))


def test_select_top_breaks_ties_by_id():
    values = torch.tensor([[1.0, 2.0, 2.0, 0.5]])
    ids = torch.tensor([[7, 9, 4, 1]])
    assert select_top(values, ids, 3).tolist() == [[2, 1, 0]]


@pytest.mark.parametrize("sizes", [[1] * 6 + [34], [13, 27], [40]])
@pytest.mark.parametrize("chunk_rows", [3, 64])
def test_chunked_updates_equal_one_update(sizes, chunk_rows):
    batch = make_batch()
    reference = one_pass([batch]).compute()
    assert_results_equal(one_pass(split(batch, sizes), chunk_rows=chunk_rows).compute(), reference)


def test_merged_shards_equal_one_pass(tmp_path):
    batch = make_batch()
    reference = one_pass([batch]).compute()
    parts = split(batch, [11, 9, 20])
    shards = [one_pass([part]) for part in parts]

    merged = one_pass([parts[0]])
    merged.merge(shards[1])
    merged.merge(shards[2].state_dict())
    assert_results_equal(merged.compute(), reference)
    # any merge order gives the same exemplars and statistics
    assert_results_equal(LatentStats.merge_all(shards[::-1]).compute(), reference)
    from_states = LatentStats.merge_all([s.state_dict() for s in shards], store_dir=tmp_path, chunk_rows=4)
    assert_results_equal(from_states.compute(), reference)
    assert_results_equal(LatentStats.from_state_dict(one_pass([batch]).state_dict()).compute(), reference)


def test_gather_over_a_process_group(tmp_path):
    import torch.distributed as dist

    batch = make_batch()
    stats = one_pass([batch])
    assert gather_latent_stats(stats) is stats  # not initialised: a no-op
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        gathered = gather_latent_stats(stats)
    finally:
        dist.destroy_process_group()
    assert gathered is not stats
    assert_results_equal(gathered.compute(), stats.compute())


def test_store_dir_keeps_rows_on_disk(tmp_path):
    batch = make_batch()
    reference = one_pass([batch]).compute()
    stats = one_pass(split(batch, [25, 15]), store_dir=tmp_path, chunk_rows=8)
    files = list(tmp_path.rglob("*.npy"))
    assert len(files) == 5 * 5  # 5 chunks of 8 rows for z_max, z_avg, labels, image_ids, primitives
    assert_results_equal(stats.compute(chunk_elements=N_IMAGES * 3), reference)  # 3 latents per column chunk
    stats.close()
    assert not list(tmp_path.rglob("*.npy"))


@pytest.mark.parametrize("store", [False, True])
def test_chunked_rows_append_and_read_columns(tmp_path, store):
    rows = ChunkedRows((5,), torch.float32, chunk_rows=4, store_dir=tmp_path if store else None)
    data = torch.arange(11 * 5, dtype=torch.float32).reshape(11, 5)
    assert rows.read().shape == (0, 5) and rows.read(slice(1, 3)).shape == (0, 2)
    rows.append(data[:3])
    rows.append(data[3:10])
    rows.append(data[10:])
    assert len(rows) == 11 and rows.on_disk == store
    assert torch.equal(rows.read(), data)
    assert torch.equal(rows.read(slice(1, 3)), data[:, 1:3])
    with pytest.raises(ValueError):
        rows.append(torch.zeros(2, 4))


@pytest.mark.parametrize("q", [0.0, 0.37, 0.9, 0.99, 1.0])
def test_quantile_linear_matches_torch(q):
    x = torch.rand(53, 6, dtype=torch.float64)
    assert torch.allclose(quantile_linear(x, q), torch.quantile(x, q, dim=0, interpolation="linear"))


def test_logit_lens_gives_knockout_score_and_a_stats_block():
    batch = make_batch()
    lens = torch.randn(NUM_LATENTS, NUM_CLASSES, dtype=torch.float64)
    res = one_pass([batch]).compute(logit_lens=lens)
    assert torch.allclose(res.knockout, -res.mean_on_zavg[:, None] * lens)
    assert res.score.shape == (NUM_LATENTS, NUM_CLASSES)
    names = [f"class{c}" for c in range(NUM_CLASSES)]
    summary = latent_summary(res, 0, names, [f"prim{p}" for p in range(NUM_PRIMITIVES)], k=3)
    assert [c["class"] for c in summary["top_classes"]] == [names[c] for c in res.score[0].argsort(descending=True)[:3]]
    assert summary["anti_classes"][0]["class"] == names[res.score[0].argmin()]
    assert summary["ground_truth"]["primitive"].startswith("prim")
    parsed = parse_stats_block(format_stats_block(summary))
    assert parsed["latent"] == 0 and set(parsed["top_classes"][0]) == {"class", "S", "pmi", "delta", "w"}
    assert one_pass([batch]).compute().score is None


def test_rejects_inconsistent_input():
    acts, labels, ids, prims, masks = make_batch()
    stats = new_stats()
    with pytest.raises(ValueError, match="latents"):
        stats.update(acts[:, :, :5], labels, ids, prims)
    with pytest.raises(ValueError, match="primitives"):
        stats.update(acts, labels, ids)
    with pytest.raises(RuntimeError):
        stats.compute()
    with pytest.raises(ValueError, match="quantile"):
        one_pass([make_batch()]).merge(new_stats(quantile=0.5))
