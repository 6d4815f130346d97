"""The folded standardisation: the exported weights give our activations, Top-K latents and reconstructions on raw
tokens — checked in plain torch, with sparsify's own loader, and against SAELens's documented layout."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors import safe_open

from sae_lab.export import export_sae
from sae_lab.export.fold import fold_standardization
from tests.export.conftest import CLASSIFIER, D_IN, LAYER, META, NUM_LATENTS, K, raw_tokens
from tests.helpers.threads import one_thread  # noqa: F401

TOL = 1e-5
"""Two float32 computations of the same numbers (values up to ~10): rounding only."""


def ours(sae, x):
    """Our SAE on raw tokens: (acts, indices) (N, K) and the raw-space reconstruction (N, C)."""
    out = sae(sae.standardize(x))
    return out.latent_acts, out.latent_indices, sae.unstandardize(out.x_hat)


def by_index(acts, indices):
    """Rows ordered by latent index, so two Top-K results compare entry by entry."""
    indices, order = indices.sort(1)
    return acts.gather(1, order), indices


def assert_same_code(acts, indices, ref_acts, ref_indices):
    acts, indices = by_index(acts, indices)
    ref_acts, ref_indices = by_index(ref_acts, ref_indices)
    assert torch.equal(indices, ref_indices)
    torch.testing.assert_close(acts, ref_acts, atol=TOL, rtol=0)


def test_every_token_has_k_positive_latents(sae):
    # Otherwise zero-valued latents would fill the Top-K arbitrarily and the index comparisons below would be moot.
    acts, _, _ = ours(sae, raw_tokens(sae))
    assert (acts > 0).all()


def test_the_folded_weights_give_the_same_pre_activations_and_reconstructions_in_float64(sae):
    s = copy.deepcopy(sae).double()
    f = fold_standardization(s)
    x = raw_tokens(s)
    pre_ours = (s.standardize(x) - s.b_dec) @ s.W_enc.T + s.b_enc
    pre_folded = (x - f.b_dec) @ f.W_enc.T + f.b_enc
    torch.testing.assert_close(pre_folded, pre_ours, atol=1e-10, rtol=0)
    z = torch.rand(len(x), NUM_LATENTS, dtype=torch.float64)  # any code, not only Top-K ones
    torch.testing.assert_close(z @ f.W_dec + f.b_dec, s.unstandardize(z @ s.W_dec + s.b_dec), atol=1e-10, rtol=0)
    assert torch.equal(f.b_enc, s.b_enc)  # b' sits inside the encoder's bracket too: nothing left for b_enc
    assert not torch.allclose(f.W_dec.norm(dim=1), torch.ones(NUM_LATENTS, dtype=torch.float64))  # not unit-norm


def test_a_non_positive_sigma_or_a_nan_is_refused_naming_the_tensor(sae):
    from tests.export.conftest import make_sae

    bad = make_sae()
    bad.sigma[3] = 0
    with pytest.raises(ValueError, match="'sigma'"):
        fold_standardization(bad)
    bad = make_sae()
    bad.W_dec[0, 0] = float("nan")
    with pytest.raises(ValueError, match="'W_dec'"):
        fold_standardization(bad)


def test_sparsify_loads_the_export_and_matches_ours_on_raw_tokens(sae, sae_dir, tmp_path, monkeypatch):
    sparse_coder = pytest.importorskip("sparsify.sparse_coder", reason="eai-sparsify is not installed")
    from sparsify.utils import eager_decode

    # sparsify picks its Triton decoder whenever triton imports, even for CPU tensors; its eager one is the same sum.
    monkeypatch.setattr(sparse_coder, "decoder_impl", eager_decode)
    out = export_sae(sae_dir, tmp_path / "sparsify", "sparsify")
    coder = sparse_coder.SparseCoder.load_from_disk(out)
    assert (coder.d_in, coder.num_latents, coder.cfg.k, coder.cfg.normalize_decoder) == (D_IN, NUM_LATENTS, K, False)
    x = raw_tokens(sae)
    acts, indices, x_hat = ours(sae, x)
    with torch.no_grad():
        enc = coder.encode(x)
        theirs = coder.decode(enc.top_acts, enc.top_indices)
    assert_same_code(enc.top_acts, enc.top_indices, acts, indices)
    torch.testing.assert_close(theirs, x_hat, atol=TOL, rtol=0)
    side = json.loads((out / "sae_lab.json").read_text())
    assert (side["layer"], side["classifier"], side["metadata"]) == (LAYER, CLASSIFIER, META)


def test_the_sparsify_files_are_what_its_loader_reads(sae_dir, tmp_path):
    # Also runs without sparsify installed: sparsify 1.3's load_from_disk is strict about the tensor names.
    out = export_sae(sae_dir, tmp_path / "sparsify", "sparsify")
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg == {"activation": "topk", "expansion_factor": 2, "normalize_decoder": False, "num_latents": 64, "k": 4,
                   "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": 32}  # fmt: skip
    with safe_open(str(out / "sae.safetensors"), "pt") as f:
        shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    assert shapes == {"encoder.weight": (64, 32), "encoder.bias": (64,), "W_dec": (64, 32), "b_dec": (32,)}


def saelens_forward(tensors: dict, cfg: dict, x):
    """SAELens 6.x ``TopKSAE`` as its code computes it: ``sae_in = x − b_dec`` (apply_b_dec_to_input),
    ``hidden_pre = sae_in @ W_enc + b_enc``, top K of hidden_pre then ReLU, ``feature_acts @ W_dec + b_dec``."""
    sae_in = x - tensors["b_dec"] * cfg["apply_b_dec_to_input"]
    hidden_pre = sae_in @ tensors["W_enc"] + tensors["b_enc"]
    values, indices = hidden_pre.topk(cfg["k"], dim=-1, sorted=False)
    feature_acts = torch.zeros_like(hidden_pre).scatter(-1, indices, values.relu())
    return feature_acts, feature_acts @ tensors["W_dec"] + tensors["b_dec"]


def test_the_saelens_files_follow_its_documented_format_and_match_ours(sae, sae_dir, tmp_path):
    out = export_sae(sae_dir, tmp_path / "saelens", "saelens")
    cfg = json.loads((out / "cfg.json").read_text())
    assert {k: cfg[k] for k in ("architecture", "d_in", "d_sae", "k", "dtype", "apply_b_dec_to_input",
                                "normalize_activations", "reshape_activations", "rescale_acts_by_decoder_norm")} == {
        "architecture": "topk", "d_in": D_IN, "d_sae": NUM_LATENTS, "k": K, "dtype": "float32",
        "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
        "rescale_acts_by_decoder_norm": False}  # fmt: skip
    assert cfg["activation_fn_kwargs"] == {"k": K} and cfg["activation_fn"] == "topk"  # the pre-6.0 spelling
    meta = cfg["metadata"]
    assert int(meta["sae_lens_version"].split(".")[0]) >= 6  # read as the 6.x layout, metadata kept whole
    assert (meta["hook_name"], meta["model_name"], meta["sae_lab"]["metadata"]) == (LAYER, CLASSIFIER, META)
    with safe_open(str(out / "sae_weights.safetensors"), "pt") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    assert {n: tuple(t.shape) for n, t in tensors.items()} == {
        "W_enc": (D_IN, NUM_LATENTS), "b_enc": (NUM_LATENTS,), "W_dec": (NUM_LATENTS, D_IN), "b_dec": (D_IN,)}  # fmt: skip
    x = raw_tokens(sae)
    acts, indices, x_hat = ours(sae, x)
    feature_acts, theirs = saelens_forward(tensors, cfg, x)
    top_acts, top_indices = feature_acts.topk(K, dim=1)
    assert_same_code(top_acts, top_indices, acts, indices)
    torch.testing.assert_close(theirs, x_hat, atol=TOL, rtol=0)


def test_saelens_loads_the_export_and_matches_ours(sae, sae_dir, tmp_path):
    sae_lens = pytest.importorskip("sae_lens", reason="sae-lens is not installed (too heavy for the dev extras)")
    out = export_sae(sae_dir, tmp_path / "saelens", "saelens")
    loaded = sae_lens.SAE.load_from_disk(str(out))
    assert loaded.cfg.metadata["sae_lab"]["layer"] == LAYER
    x = raw_tokens(sae)
    acts, indices, x_hat = ours(sae, x)
    with torch.no_grad():
        feature_acts = loaded.encode(x)
        theirs = loaded.decode(feature_acts)
    top_acts, top_indices = feature_acts.topk(K, dim=1)
    assert_same_code(top_acts, top_indices, acts, indices)
    torch.testing.assert_close(theirs, x_hat, atol=TOL, rtol=0)
