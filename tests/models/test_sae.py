import json

import pytest
import torch

import sae_lab.models.sparse_kernels as kernels
from sae_lab.models.sae import (
    ForwardOutput,
    SaeConfig,
    TopKSAE,
    fraction_of_variance_unexplained,
)
from tests.helpers.threads import one_thread  # noqa: F401  (autouse)

D_IN = 32
NUM_LATENTS = 64
K = 4
N = 96


def make_sae(sparse_decode: bool = True, seed: int = 0, **overrides) -> TopKSAE:
    torch.manual_seed(seed)
    return TopKSAE(SaeConfig(d_in=D_IN, num_latents=NUM_LATENTS, k=K, sparse_decode=sparse_decode, **overrides))


def tokens(n: int = N, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, D_IN, generator=g) * torch.linspace(0.5, 2.0, D_IN) + 0.3).to(dtype)


def perturb(sae: TopKSAE) -> TopKSAE:
    """Non-trivial biases so every parameter's gradient is exercised."""
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.5)
        sae.b_dec.normal_(0, 0.5)
        sae.W_enc.add_(0.1 * torch.randn_like(sae.W_enc))
    return sae


def test_config_defaults_and_k_aux():
    cfg = SaeConfig(d_in=D_IN, num_latents=NUM_LATENTS, k=K)
    assert cfg.k_aux == D_IN // 2
    assert cfg.auxk_coef == pytest.approx(1 / 32)
    assert cfg.dead_window_tokens == 1_000_000 and cfg.sparse_decode


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"k": NUM_LATENTS + 1}, "exceeds num_latents"),
        ({"k": 0}, "k must be positive"),
        ({"d_in": 0}, "d_in must be positive"),
        ({"num_latents": -1}, "num_latents must be positive"),
        ({"k_aux": NUM_LATENTS + 1}, "k_aux"),
        ({"k_aux": 0}, "k_aux"),
        ({"auxk_coef": -1.0}, "auxk_coef"),
        ({"dead_window_tokens": 0}, "dead_window_tokens"),
    ],
)
def test_config_validation(overrides, match):
    kwargs = {"d_in": D_IN, "num_latents": NUM_LATENTS, "k": K, **overrides}
    with pytest.raises(ValueError, match=match):
        SaeConfig(**kwargs)


def test_fvu_reference_points():
    x = tokens()
    assert fraction_of_variance_unexplained(x, x.mean(0).expand_as(x)).item() == pytest.approx(1.0, abs=1e-6)
    assert fraction_of_variance_unexplained(x, x).item() == 0.0
    assert fraction_of_variance_unexplained(x, x + 0.1).item() > 0.0


def test_init_encoder_is_decoder_transpose_with_unit_rows():
    sae = make_sae()
    torch.testing.assert_close(sae.W_enc, sae.W_dec)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(NUM_LATENTS))
    x = tokens()
    sae.init_b_dec(x)
    torch.testing.assert_close(sae.b_dec, x.mean(0))


def test_forward_shapes_and_topk():
    sae = perturb(make_sae())
    out = sae(tokens())
    assert isinstance(out, ForwardOutput)
    assert out.x_hat.shape == (N, D_IN)
    assert out.latent_acts.shape == out.latent_indices.shape == (N, K)
    assert (out.latent_acts >= 0).all() and out.auxk_loss.item() == 0.0
    dense = sae.dense_acts(tokens())
    torch.testing.assert_close(out.latent_acts.sort(1).values, dense.topk(K, dim=1).values.sort(1).values)
    torch.testing.assert_close(out.fvu, fraction_of_variance_unexplained(tokens(), out.x_hat))
    acts, indices = sae.encode(tokens())
    torch.testing.assert_close(sae.decode(acts, indices), sae.decode_dense(acts, indices))


def test_standardization_round_trip():
    sae = make_sae()
    x = tokens() * 3 + 5
    sae.set_standardization(x.mean(0), x.std(0))
    x_tilde = sae.standardize(x)
    torch.testing.assert_close(x_tilde.mean(0), torch.zeros(D_IN), atol=1e-5, rtol=0)
    torch.testing.assert_close(sae.unstandardize(x_tilde), x)
    std = x.std(0)
    std[0] = 0.0  # a constant channel must not divide by zero
    sae.set_standardization(x.mean(0), std)
    assert sae.sigma[0] == 1.0 and torch.isfinite(sae.standardize(x)).all()


@pytest.mark.parametrize("with_dead, chunked", [(False, False), (True, False), (True, True)])
def test_sparse_matches_dense_outputs_and_all_grads(with_dead, chunked, monkeypatch):
    if chunked:  # several encoder row chunks, the last one partial
        monkeypatch.setattr(kernels, "_CHUNK_ELEMENTS", NUM_LATENTS * 40)
    sparse, dense = perturb(make_sae(True)).double(), make_sae(False).double()
    dense.load_state_dict(sparse.state_dict())
    dead_mask = torch.zeros(NUM_LATENTS, dtype=torch.bool)
    dead_mask[::3] = with_dead  # 22 dead latents > k_aux = 16: exercises the top-k_aux selection
    x = tokens(dtype=torch.float64)
    outs = []
    for sae in (sparse, dense):
        out = sae(x, dead_mask)
        (out.fvu + sae.cfg.auxk_coef * out.auxk_loss).backward()
        outs.append(out)
    torch.testing.assert_close(outs[0].x_hat, outs[1].x_hat)
    torch.testing.assert_close(outs[0].fvu, outs[1].fvu)
    torch.testing.assert_close(outs[0].auxk_loss, outs[1].auxk_loss)
    assert (outs[0].auxk_loss > 0).item() == with_dead
    for (name, p_sparse), p_dense in zip(sparse.named_parameters(), dense.parameters()):
        assert p_sparse.grad.abs().sum() > 0, name
        torch.testing.assert_close(p_sparse.grad, p_dense.grad, msg=lambda m, name=name: f"{name}: {m}")


def test_sparse_matches_dense_input_grad_and_few_dead():
    sparse, dense = perturb(make_sae(True)).double(), make_sae(False).double()
    dense.load_state_dict(sparse.state_dict())
    dead_mask = torch.zeros(NUM_LATENTS, dtype=torch.bool)
    dead_mask[[3, 9, 40]] = True  # fewer dead latents than k_aux: all of them are used
    grads = []
    for sae in (sparse, dense):
        x = tokens(dtype=torch.float64).requires_grad_()
        out = sae(x, dead_mask)
        (out.fvu + out.auxk_loss).backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_gather_dot_fallback_matches_kernel(monkeypatch):
    grad_out, table = torch.randn(N, D_IN), torch.randn(NUM_LATENTS, D_IN)
    indices = torch.randint(0, NUM_LATENTS, (N, K))
    expected = kernels._gather_dot(grad_out, table, indices)
    monkeypatch.setattr(kernels, "_PSW_BACKWARD", None)
    torch.testing.assert_close(kernels._gather_dot(grad_out, table, indices), expected)
    torch.testing.assert_close(expected, torch.einsum("nc,nkc->nk", grad_out, table[indices]))


def test_sparse_float32_grads_close_to_dense():
    sparse, dense = perturb(make_sae(True)), make_sae(False)
    dense.load_state_dict(sparse.state_dict())
    dead_mask = torch.arange(NUM_LATENTS) % 2 == 0
    for sae in (sparse, dense):
        out = sae(tokens(), dead_mask)
        (out.fvu + sae.cfg.auxk_coef * out.auxk_loss).backward()
    for p_sparse, p_dense in zip(sparse.parameters(), dense.parameters()):
        torch.testing.assert_close(p_sparse.grad, p_dense.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("sparse_decode", [True, False])
def test_decoder_geometry_under_training(sparse_decode):
    sae = perturb(make_sae(sparse_decode))
    opt = torch.optim.AdamW(sae.parameters(), lr=1e-2)
    x = tokens()
    for _ in range(5):
        opt.zero_grad()
        sae(x, torch.arange(NUM_LATENTS) < 10).fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        parallel = (sae.W_dec.grad * sae.W_dec).sum(1)
        torch.testing.assert_close(parallel, torch.zeros(NUM_LATENTS), atol=1e-6, rtol=0)
        opt.step()
        sae.set_decoder_norm_to_unit_norm()
        torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(NUM_LATENTS))


def test_training_reduces_fvu():
    sae = make_sae()
    x = tokens(256)
    sae.init_b_dec(x)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    first = None
    for _ in range(20):
        opt.zero_grad()
        out = sae(x)
        out.fvu.backward()
        first = out.fvu.item() if first is None else first
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        sae.set_decoder_norm_to_unit_norm()
    assert sae(x).fvu.item() < 0.8 * first


def test_resample_dead_changes_exactly_dead_latents():
    sae = perturb(make_sae())
    before = {name: p.detach().clone() for name, p in sae.named_parameters()}
    usage_ema = torch.full((NUM_LATENTS,), 0.1)
    dead = torch.tensor([2, 7, 30, 63])
    usage_ema[dead] = 0.0
    resampled = sae.resample_dead(tokens(), usage_ema, threshold=1e-3, generator=torch.Generator().manual_seed(0))
    assert resampled.tolist() == dead.tolist()
    alive = torch.ones(NUM_LATENTS, dtype=torch.bool)
    alive[dead] = False
    for name in ("W_enc", "W_dec", "b_enc"):
        p = getattr(sae, name).detach()
        assert torch.equal(p[alive], before[name][alive]), name
    assert not torch.isclose(sae.W_dec[dead], before["W_dec"][dead]).all(1).any()
    torch.testing.assert_close(sae.W_dec[dead].norm(dim=1), torch.ones(len(dead)))
    assert torch.equal(sae.b_enc[dead], torch.zeros(len(dead)))
    cos = torch.nn.functional.cosine_similarity(sae.W_enc[dead], sae.W_dec[dead], dim=1)
    torch.testing.assert_close(cos, torch.ones(len(dead)))
    assert (sae.W_enc[dead].norm(dim=1) < sae.W_enc[alive].norm(dim=1).mean()).all()
    assert torch.equal(sae.b_dec, before["b_dec"])
    assert len(sae.resample_dead(tokens(), torch.ones(NUM_LATENTS), threshold=1e-3)) == 0


def test_save_load_round_trip_without_pickle(tmp_path, monkeypatch):
    sae = perturb(make_sae(seed=3, k_aux=8))
    sae.layer, sae.classifier, sae.metadata = "layer3", "sketch-resnet18@abc123", {"tokens_seen": 10}
    x = tokens() * 2 + 1
    sae.set_standardization(x.mean(0), x.std(0))
    sae.save_to_disk(tmp_path / "export")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["cfg.json", "sae.safetensors"]
    info = json.loads((tmp_path / "export" / "cfg.json").read_text())
    assert info["layer"] == "layer3" and info["classifier"] == "sketch-resnet18@abc123"
    assert info["d_in"] == D_IN and info["k_aux"] == 8 and info["metadata"] == {"tokens_seen": 10}

    def no_unpickling(*args, **kwargs):
        raise AssertionError("loading must not unpickle")

    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setattr("pickle.load", no_unpickling)
    monkeypatch.setattr("pickle.loads", no_unpickling)
    loaded = TopKSAE.load_from_disk(tmp_path / "export")
    assert loaded.cfg == sae.cfg and loaded.layer == "layer3" and loaded.classifier == sae.classifier
    for name, t in sae.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t), name
    dead_mask = torch.arange(NUM_LATENTS) < 20
    for a, b in zip(sae(sae.standardize(x), dead_mask), loaded(loaded.standardize(x), dead_mask)):
        assert torch.equal(a, b)
