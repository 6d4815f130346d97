"""Cached feature tokens: memory-mapped ``.npy`` shards written once by ``cache-tokens``, with a manifest.

Shards are written under a temporary name and renamed; the manifest lists the finished ones, so a killed
run is completed, not restarted. :class:`CachedTokens` reads them back, each DDP rank a disjoint equal share.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset

from sae_lab.data.tokens import TokenMoments, equal_share, image_datamodule, rank_and_world
from sae_lab.models.tokens import fmap_to_tokens
from sae_lab.run.io import atomic_write_text

MANIFEST = "manifest.json"
CACHE_VERSION = 1


def _manifest(path: Path) -> dict:
    return json.loads((path / MANIFEST).read_text())


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of a finished cache; raises when the cache is missing or half-written."""
    path = Path(path)
    if not (path / MANIFEST).exists():
        raise FileNotFoundError(f"no token cache at {path} (no {MANIFEST}); run `python -m sae_lab cache-tokens`")
    manifest = _manifest(path)
    if not manifest.get("complete"):
        raise ValueError(f"the token cache at {path} is half-written; run `cache-tokens` again to complete it")
    return manifest


@torch.no_grad()
def write_token_cache(
    classifier_path: str,
    out: str | os.PathLike,
    splits: tuple[str, ...] = ("train", "val"),
    data: str | None = None,
    batch_size: int = 256,
    shard_images: int = 4096,
    dtype: str = "float16",
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Runs the classifier over the images of `splits` and writes their tokens as shards.

    Shards are written under a temporary name and renamed; the manifest lists the finished ones
    and is rewritten after each, so a killed run is completed (not restarted) when called again.
    The per-channel mean and std come from the ``train`` tokens, accumulated in float64.

    Returns:
        The cache folder.
    """
    from tqdm.auto import tqdm

    from sae_lab.models.classifier_io import load_classifier

    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
    out = Path(out)
    clf = load_classifier(classifier_path)
    net = clf.net.to(device)
    dm = image_datamodule(clf.data_hparams, data, batch_size, num_workers=0)
    dm.prepare_data()
    dm.setup("fit")
    params = {"fingerprint": clf.fingerprint, "layer": clf.net.layer, "data": str(dm.source), "dtype": dtype,
              "image_size": dm.hparams.image_size, "shard_images": shard_images, "splits": list(splits)}  # fmt: skip
    if (out / MANIFEST).exists():
        manifest = _manifest(out)
        if manifest.get("params") != params:
            if not overwrite:
                raise FileExistsError(
                    f"{out} holds a token cache of another classifier or settings; pass --overwrite to rebuild it"
                )
            manifest = None
        elif manifest.get("complete"):
            return out
    else:
        manifest = None
    if manifest is None:
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("*.npy"):
            old.unlink()
        manifest = {"version": CACHE_VERSION, "params": params, "classifier": str(classifier_path),
                    "d_in": clf.net.channels, "splits": {}, "complete": False}  # fmt: skip
    for split in splits:
        ds = dm.datasets[split]
        entry = manifest["splits"].setdefault(split, {"n_images": len(ds), "shards": []})
        done = {s["start"] for s in entry["shards"]}
        starts = range(0, len(ds), shard_images)
        bar = tqdm(total=len(ds), desc=f"tokens {split}", unit="img", disable=not progress, leave=False)
        bar.update(sum(s["stop"] - s["start"] for s in entry["shards"]))
        for start in starts:
            if start in done and (out / f"{split}-{start:08d}.npy").exists():
                continue
            stop = min(len(ds), start + shard_images)
            tokens, grid = [], None
            for a in range(start, stop, batch_size):
                images = torch.stack([ds[i]["image"] for i in range(a, min(stop, a + batch_size))]).to(device)
                fmap = net.features(images)
                grid = list(fmap.shape[2:])
                tokens.append(fmap_to_tokens(fmap).float().cpu())
                bar.update(len(images))
            block = torch.cat(tokens)
            name = f"{split}-{start:08d}.npy"
            tmp = out / f".tmp-{name}"  # ends in .npy, so np.save keeps the name
            np.save(tmp, block.numpy().astype(dtype))
            os.replace(tmp, out / name)
            moments = TokenMoments(block.shape[1])
            moments.update(block)
            entry["shards"] = [s for s in entry["shards"] if s["start"] != start] + [
                {"file": name, "start": start, "stop": stop, "n_tokens": len(block), "sums": moments.sums.tolist()}
            ]
            entry["shards"].sort(key=lambda s: s["start"])
            entry["grid"] = grid
            atomic_write_text(out / MANIFEST, json.dumps(manifest))
        bar.close()
    train = manifest["splits"].get("train") or next(iter(manifest["splits"].values()))
    moments = TokenMoments(manifest["d_in"])
    moments.sums = torch.tensor([s["sums"] for s in train["shards"]], dtype=torch.float64).sum(0)
    mean, std = moments.compute()
    manifest.update(mean=mean.tolist(), std=std.tolist(), complete=True)
    for entry in manifest["splits"].values():
        entry["n_tokens"] = sum(s["n_tokens"] for s in entry["shards"])
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    return out


class CachedTokens(IterableDataset):
    """Batches of tokens read from memory-mapped shards.

    Each epoch draws a seeded permutation of all tokens; rank r takes an equal strided share, so
    ranks see disjoint tokens and the same number of batches.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        split: str,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        epoch_fn: Callable[[], int] | None = None,
    ):
        self.cache_dir = Path(cache_dir)
        manifest = read_manifest(self.cache_dir)
        if split not in manifest["splits"]:
            raise ValueError(f"token cache {self.cache_dir} has no split {split!r}")
        shards = manifest["splits"][split]["shards"]
        self.arrays = [np.load(self.cache_dir / s["file"], mmap_mode="r") for s in shards]
        for s, arr in zip(shards, self.arrays):
            if len(arr) != s["n_tokens"]:
                raise ValueError(f"shard {s['file']} has {len(arr)} tokens, the manifest says {s['n_tokens']}")
        self.offsets = np.cumsum([0] + [len(a) for a in self.arrays])
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch_fn = epoch_fn or (lambda: 0)

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    def __len__(self) -> int:
        _, world = rank_and_world()
        return (self.num_tokens // world) // self.batch_size

    def gather(self, index: np.ndarray) -> torch.Tensor:
        index = np.sort(index)  # sorted reads are sequential within a shard
        shard = np.searchsorted(self.offsets, index, side="right") - 1
        parts = []
        for s in np.unique(shard):
            sel = index[shard == s] - self.offsets[s]
            parts.append(torch.from_numpy(np.asarray(self.arrays[s][sel], dtype=np.float32)))
        return torch.cat(parts)

    def __iter__(self) -> Iterator[torch.Tensor]:
        rank, world = rank_and_world()
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch_fn()]).permutation(self.num_tokens)
        else:
            order = np.arange(self.num_tokens)
        mine = order[equal_share(self.num_tokens, rank, world)]
        for b in range(len(mine) // self.batch_size):
            idx = mine[b * self.batch_size : (b + 1) * self.batch_size]
            batch = self.gather(idx)
            if self.shuffle:  # gather sorted the rows; restore a random order within the batch
                batch = batch[
                    torch.from_numpy(np.random.default_rng([self.seed, self.epoch_fn(), b]).permutation(len(batch)))
                ]
            yield batch
