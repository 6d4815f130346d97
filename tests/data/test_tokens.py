import json
import os

import numpy as np
import pytest
import torch

from sae_lab.data import token_cache as tc
from sae_lab.data import tokens as tok
from sae_lab.data.token_datamodule import FeatureTokenDataModule
from sae_lab.models.classifier_io import load_classifier


@pytest.fixture(scope="module")
def cache(classifier_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("tokens") / "cache"
    return tc.write_token_cache(str(classifier_ckpt), out, dtype="float32", shard_images=40, progress=False)


def all_tokens(dataset) -> torch.Tensor:
    return torch.cat(list(dataset))


def test_cached_and_live_sources_give_the_same_tokens(cache, classifier_ckpt):
    clf = load_classifier(classifier_ckpt)
    dm = tok.image_datamodule(clf.data_hparams, None, 16, 0)
    dm.setup("fit")
    live = tok.LiveTokens(clf.net, dm.datasets["train"], batch_size=64, shuffle=False, image_batch_size=16)
    cached = tc.CachedTokens(cache, "train", batch_size=64, shuffle=False)
    a, b = all_tokens(live), all_tokens(cached)
    assert len(live) == len(cached) == len(a) // 64 and a.shape == b.shape
    assert torch.allclose(a, b, atol=1e-5)


def test_shuffled_sources_keep_every_token_and_change_order_by_epoch(cache):
    plain = all_tokens(tc.CachedTokens(cache, "train", 1, shuffle=False))  # every token, in order
    epoch = {"n": 0}
    shuffled = tc.CachedTokens(cache, "train", 64, shuffle=True, seed=1, epoch_fn=lambda: epoch["n"])
    e0 = all_tokens(shuffled)
    epoch["n"] = 1
    e1 = all_tokens(shuffled)
    assert not torch.equal(e0, e1) and not torch.equal(e0, plain)
    assert torch.equal(e0, all_tokens(tc.CachedTokens(cache, "train", 64, shuffle=True, seed=1)))
    key = lambda t: sorted(map(tuple, t.numpy().round(4).tolist()))  # noqa: E731
    assert len(e0) == len(plain) - len(plain) % 64 and set(key(e0)) <= set(key(plain))


def test_ddp_ranks_get_disjoint_equal_shares(cache, monkeypatch):
    ds = tc.CachedTokens(cache, "train", 32, shuffle=True, seed=0)
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setattr(tc, "rank_and_world", lambda r=rank: (r, 2))
        per_rank.append(all_tokens(ds))
        assert len(ds) == len(per_rank[-1]) // 32
    assert len(per_rank[0]) == len(per_rank[1])
    rows = [set(map(tuple, t.numpy().tolist())) for t in per_rank]
    assert not rows[0] & rows[1]


def test_manifest_moments_are_the_float64_mean_and_std_of_train_tokens(cache):
    manifest = tc.read_manifest(cache)
    tokens = all_tokens(tc.CachedTokens(cache, "train", 1, shuffle=False)).double()
    assert np.allclose(manifest["mean"], tokens.mean(0).numpy(), atol=1e-5)
    std = tokens.std(0, unbiased=False).clamp_min(1e-6)
    assert np.allclose(manifest["std"], std.numpy(), atol=1e-4)


def test_half_written_cache_is_detected_then_completed_without_redoing_finished_shards(classifier_ckpt, tmp_path):
    out = tmp_path / "cache"
    tc.write_token_cache(str(classifier_ckpt), out, dtype="float32", shard_images=40, progress=False)
    manifest = json.loads((out / tc.MANIFEST).read_text())
    # Simulate a crash after the first shard: the manifest lists one shard and is not complete.
    manifest["complete"] = False
    first = manifest["splits"]["train"]["shards"][0]
    manifest["splits"]["train"]["shards"] = [first]
    del manifest["splits"]["val"]
    (out / tc.MANIFEST).write_text(json.dumps(manifest))
    (out / "train-00000040.npy").write_bytes(b"garbage from a dying writer")
    with pytest.raises(ValueError, match="half-written"):
        tc.CachedTokens(out, "train", 8)
    stamp = os.stat(out / first["file"]).st_mtime_ns
    tc.write_token_cache(str(classifier_ckpt), out, dtype="float32", shard_images=40, progress=False)
    assert os.stat(out / first["file"]).st_mtime_ns == stamp  # finished shard kept
    ds = tc.CachedTokens(out, "train", 8, shuffle=False)
    assert ds.num_tokens == tc.read_manifest(out)["splits"]["train"]["n_tokens"]


def test_a_cache_of_another_classifier_is_not_reused(cache, classifier_ckpt, tmp_path):
    other = tmp_path / "other.ckpt"
    ckpt = torch.load(classifier_ckpt, weights_only=True)
    ckpt["state_dict"]["net.fc.bias"] += 1.0
    torch.save(ckpt, other)
    with pytest.raises(FileExistsError, match="another classifier"):
        tc.write_token_cache(str(other), cache, dtype="float32", shard_images=40, progress=False)


def test_datamodule_rejects_bad_arguments(classifier_ckpt, tmp_path):
    with pytest.raises(ValueError, match="source"):
        FeatureTokenDataModule(str(classifier_ckpt), source="telepathy")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FeatureTokenDataModule(str(tmp_path / "missing.ckpt"))


def test_live_datamodule_moments_match_the_cache(cache, classifier_ckpt):
    dm = FeatureTokenDataModule(str(classifier_ckpt), source="live", batch_size=64, image_batch_size=16)
    dm.setup("fit")
    manifest = tc.read_manifest(cache)
    assert torch.allclose(dm.token_mean, torch.tensor(manifest["mean"]), atol=1e-5)
    assert dm.d_in == 512 and dm.grid == tuple(manifest["splits"]["train"]["grid"])
