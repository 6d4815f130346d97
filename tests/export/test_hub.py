"""Loading an SAE by name: `TopKSAE.from_pretrained` / `save_pretrained`, a local folder, a cached Hub repo (offline),
an uncached one (a clear error), and `resolve_run` (hence `SaeLab.load`) taking the same names."""

from __future__ import annotations

import shutil

import huggingface_hub.constants
import pytest
import torch

from sae_lab.models.hub import hub_reference
from sae_lab.models.sae import TopKSAE
from sae_lab.run import resolve_run
from tests.export.conftest import LAYER, META, raw_tokens
from tests.helpers.threads import one_thread  # noqa: F401

REPO_ID = "someone/tiny-sae"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1 and an empty Hugging Face cache in tmp (huggingface_hub reads both when it is called)."""
    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def put_in_cache(cache, sae_dir, repo_id=REPO_ID, subfolder=None):
    """The layout `snapshot_download` leaves: models--owner--name/refs/main → snapshots/<commit>/files."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(sae_dir, snapshot / subfolder if subfolder else snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def same_sae(a: TopKSAE, b: TopKSAE) -> None:
    assert a.cfg == b.cfg and (a.layer, a.classifier, a.metadata) == (b.layer, b.classifier, b.metadata)
    for name, t in a.state_dict().items():
        assert torch.equal(t, b.state_dict()[name]), name


def test_save_pretrained_then_from_pretrained_on_a_local_folder_round_trips(sae, tmp_path, offline):
    folder = sae.save_pretrained(tmp_path / "mine")
    loaded = TopKSAE.from_pretrained(folder)
    same_sae(loaded, sae)
    x = raw_tokens(sae)
    assert torch.equal(loaded(loaded.standardize(x)).x_hat, sae(sae.standardize(x)).x_hat)


def test_a_cached_hub_repo_loads_offline(sae, sae_dir, offline):
    put_in_cache(offline, sae_dir)
    same_sae(TopKSAE.from_pretrained(REPO_ID), sae)


def test_a_subfolder_of_a_cached_repo_by_argument_or_hf_url(sae, sae_dir, offline):
    put_in_cache(offline, sae_dir, subfolder=LAYER)
    same_sae(TopKSAE.from_pretrained(REPO_ID, subfolder=LAYER), sae)
    same_sae(TopKSAE.from_pretrained(f"hf://{REPO_ID}/{LAYER}"), sae)


def test_an_uncached_hub_id_offline_names_it_and_says_it_needs_a_download(offline):
    with pytest.raises(FileNotFoundError, match="'someone/not-here' is not a local folder.*needs a download"):
        TopKSAE.from_pretrained("someone/not-here")
    with pytest.raises(FileNotFoundError, match="needs a download"):
        TopKSAE.from_pretrained("someone/not-here", local_files_only=True)


def test_what_counts_as_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert hub_reference("owner/name") == ("owner/name", None)
    assert hub_reference("hf://owner/name/layer4/x") == ("owner/name", "layer4/x")
    (tmp_path / "owner" / "name").mkdir(parents=True)
    assert hub_reference("owner/name") is None  # an existing local folder wins
    for local in ("/abs/owner/name", "./owner/x", "a/b/c", "single", "../up/x"):
        assert hub_reference(local) is None, local
    with pytest.raises(ValueError, match="hf://owner/name"):
        hub_reference("hf://only-one-part")


def test_resolve_run_takes_a_hub_id_so_saelab_load_does(sae_dir, offline, tmp_path):
    snapshot = put_in_cache(offline, sae_dir)
    ckpt = tmp_path / "classifier.ckpt"
    ckpt.write_bytes(b"")  # resolve_run only finds the file; loading it is SaeLab's
    paths = resolve_run(sae=REPO_ID, classifier=ckpt)
    assert paths.sae_dir == snapshot and paths.classifier == ckpt
    assert TopKSAE.load_from_disk(paths.sae_dir).metadata == META
    with pytest.raises(FileNotFoundError, match="needs a download"):
        resolve_run(sae="someone/not-here", classifier=ckpt)


def test_an_uncached_hub_id_on_the_command_line_with_hf_hub_offline(cli, tmp_path):
    r = cli("export", "--sae", "someone/not-here", "--format", "sparsify", "--out", str(tmp_path / "o"), cwd=tmp_path,
            env_extra={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.startswith("error: SAE 'someone/not-here' is not a local folder") and "needs a download" in r.stderr
    assert not (tmp_path / "o").exists()
