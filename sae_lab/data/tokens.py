"""Feature tokens: the classifier's explained-layer map (B, C, H, W) as tokens (B·H·W, C).

Two sources feed the SAE: **live** (the frozen classifier runs in the loop, tokens go through a
shuffle buffer) and **cached** (memory-mapped ``.npy`` shards written once by ``cache-tokens``:
:mod:`sae_lab.data.token_cache`). Both give every DDP rank a disjoint share of the same size, shuffled by a seed and the epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset

from sae_lab.models.tokens import fmap_to_tokens


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
