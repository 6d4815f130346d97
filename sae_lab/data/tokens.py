"""Feature tokens: the classifier's explained-layer map (B, C, H, W) as tokens (B·H·W, C).

Two sources feed the SAE: **live** (the frozen classifier runs in the loop, tokens go through a
shuffle buffer) and **cached** (memory-mapped ``.npy`` shards written once by ``cache-tokens``).
Both give every DDP rank a disjoint share of the same size, shuffled by a seed and the epoch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset

from sae_lab.models.tokens import fmap_to_tokens
from sae_lab.run.io import atomic_write_text

MANIFEST = "manifest.json"
CACHE_VERSION = 1


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class TokenMoments:
    """Float64 running sums of tokens, for the per-channel mean and standard deviation."""

    def __init__(self, d_in: int):
        self.sums = torch.zeros(2 * d_in + 1, dtype=torch.float64)  # [Σx, Σx², count]
        self.d_in = d_in

    def update(self, tokens: torch.Tensor) -> None:
        t = tokens.detach().to("cpu", torch.float64)
        self.sums[: self.d_in] += t.sum(0)
        self.sums[self.d_in : 2 * self.d_in] += (t * t).sum(0)
        self.sums[-1] += len(t)

    def all_reduce(self) -> None:
        if dist.is_available() and dist.is_initialized():
            buf = self.sums.to(_comm_device())
            dist.all_reduce(buf)
            self.sums = buf.cpu()

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.sums[-1].clamp_min(1)
        mean = self.sums[: self.d_in] / n
        var = (self.sums[self.d_in : 2 * self.d_in] / n - mean**2).clamp_min(0)
        # A channel that never varies (e.g. always 0 after ReLU) would divide by zero.
        std = var.sqrt().clamp_min(1e-6)
        return mean.float(), std.float()


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def equal_share(n: int, rank: int, world: int) -> slice:
    """Rank `rank`'s strided share of n items; every rank gets exactly n // world."""
    per_rank = n // world
    return slice(rank, rank + per_rank * world, world)


# --------------------------------------------------------------------------- cached


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


# --------------------------------------------------------------------------- live


class LiveTokens(IterableDataset):
    """Tokens computed on the fly by the frozen classifier, mixed in a shuffle buffer.

    Args:
        net: the classifier (its ``features`` is called under ``no_grad``).
        images: a dataset of items with an ``image`` (1, S, S) tensor.
        batch_size: tokens per yielded batch.
        shuffle: shuffle image order (seeded by `seed` and the epoch) and tokens (buffer).
        buffer_tokens: capacity of the token shuffle buffer.
        image_batch_size: images per classifier forward pass.
        device_fn: returns the device the classifier runs on.
    """

    def __init__(
        self,
        net,
        images,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        buffer_tokens: int = 65536,
        image_batch_size: int = 128,
        epoch_fn: Callable[[], int] | None = None,
        device_fn: Callable[[], torch.device] | None = None,
    ):
        self.net, self.images = net, images
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.buffer_tokens = max(buffer_tokens, batch_size)
        self.image_batch_size = image_batch_size
        self.epoch_fn = epoch_fn or (lambda: 0)
        self.device_fn = device_fn or (lambda: torch.device("cpu"))
        self._tokens_per_image: int | None = None

    def tokens_per_image(self) -> int:
        if self._tokens_per_image is None:
            with torch.no_grad():
                fmap = self.net.features(self.images[0]["image"][None].to(self.device_fn()))
            self._tokens_per_image = fmap.shape[2] * fmap.shape[3]
        return self._tokens_per_image

    def __len__(self) -> int:
        _, world = rank_and_world()
        return (len(self.images) // world) * self.tokens_per_image() // self.batch_size

    @torch.no_grad()
    def __iter__(self) -> Iterator[torch.Tensor]:
        rank, world = rank_and_world()
        epoch = self.epoch_fn()
        n = len(self.images)
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        mine = order[equal_share(n, rank, world)]
        gen = torch.Generator().manual_seed(hash((self.seed, epoch, rank)) % 2**31)
        device = self.device_fn()
        buffer: list[torch.Tensor] = []
        held = 0
        emitted, budget = 0, len(self)
        for a in range(0, len(mine), self.image_batch_size):
            images = torch.stack([self.images[int(i)]["image"] for i in mine[a : a + self.image_batch_size]])
            buffer.append(fmap_to_tokens(self.net.features(images.to(device))).float().cpu())
            held += len(buffer[-1])
            if held < self.buffer_tokens and a + self.image_batch_size < len(mine):
                continue
            pool = torch.cat(buffer)
            if self.shuffle:
                pool = pool[torch.randperm(len(pool), generator=gen)]
            # Emit all full batches but keep half the buffer (when shuffling) to mix with what comes next.
            keep = len(pool) // 2 if self.shuffle and a + self.image_batch_size < len(mine) else 0
            n_out = (len(pool) - keep) // self.batch_size
            for b in range(n_out):
                if emitted == budget:
                    return
                yield pool[b * self.batch_size : (b + 1) * self.batch_size]
                emitted += 1
            rest = pool[n_out * self.batch_size :]
            buffer, held = [rest], len(rest)


def image_datamodule(data_hparams: dict, data: str | None, batch_size: int, num_workers: int, annotations=False):
    """The classifier's own SketchDataModule (same source, size, split), without augmentation."""
    from sae_lab.data.sketch import SketchDataModule

    hp = {k: v for k, v in data_hparams.items() if not k.startswith("_")}
    hp.update(augment=False, batch_size=batch_size, num_workers=num_workers, annotations=annotations)
    if data is not None:
        hp["data"] = data
    return SketchDataModule(**hp)


def token_loader(dataset: IterableDataset, num_workers: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=None, num_workers=num_workers)
