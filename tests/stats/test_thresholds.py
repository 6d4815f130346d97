"""On-thresholds: τ, on-counts and image AUC by hand on a tiny case, and the same in any column chunking."""

import torch

from sae_lab.stats.storage import ChunkedRows
from sae_lab.stats.thresholds import on_stats
from tests.helpers.threads import one_thread  # noqa: F401

NUM_LATENTS = 6
NUM_CLASSES = 3


def rows(x: torch.Tensor) -> ChunkedRows:
    out = ChunkedRows((x.shape[1],), torch.float32, 4, None, "rows")
    out.append(x)
    return out


def test_a_latent_is_on_at_its_top_quantile_and_never_at_zero():
    z_max = torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0], [0.0, 4.0], [0.0, 5.0]])
    z_avg = z_max / 10
    labels = torch.tensor([0, 1, 2, 2, 1])
    prims = torch.tensor([[0], [0], [0], [1], [1]], dtype=torch.bool)
    on = on_stats(rows(z_max), rows(z_avg), labels, prims, NUM_CLASSES, quantile=0.5)
    assert on.tau.tolist() == [0.0, 3.0]
    assert on.n_on.tolist() == [0, 3]  # latent 0 never fires, so it is on for no image despite τ = 0
    assert torch.allclose(on.mean_on_zavg, torch.tensor([0.0, 0.4], dtype=torch.float64), atol=1e-7)
    assert on.class_on_counts.tolist() == [[0, 0, 0], [0, 1, 2]]
    assert on.image_auc[1, 0].item() == 1.0 and on.image_auc[0, 0].item() == 0.5  # ties count half


def test_column_chunks_do_not_change_anything():
    g = torch.Generator().manual_seed(0)
    z_max = torch.relu(torch.randn(20, NUM_LATENTS, generator=g))
    z_avg = z_max * torch.rand(20, NUM_LATENTS, generator=g)
    labels = torch.randint(0, NUM_CLASSES, (20,), generator=g)
    prims = torch.rand(20, 2, generator=g) > 0.5
    whole = on_stats(rows(z_max), rows(z_avg), labels, prims, NUM_CLASSES, 0.8)
    chunked = on_stats(rows(z_max), rows(z_avg), labels, prims, NUM_CLASSES, 0.8, chunk_elements=40)  # 2 columns
    for a, b in zip(whole, chunked):
        assert torch.equal(a, b)
