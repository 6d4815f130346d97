"""Evaluation under DDP without duplicates: each rank reads a disjoint share, every image exactly once.

Lightning gives an evaluation loader ``DistributedSampler(shuffle=False, drop_last=False)``, which pads the
dataset to a multiple of the world size by repeating its first images, so up to ``world − 1`` images were counted
twice in FVU, the accuracies and KL. :class:`UnpaddedDistributedSampler` is a ``DistributedSampler`` (so Lightning
keeps it instead of injecting its own) that does not pad: rank r reads images r, r + W, r + 2W, … (the report pass
splits its images the same way). The ranks' batch counts may then differ by one, which evaluation allows: the
figures are sums reduced once per epoch, and DDP syncs buffers only on the first evaluation batch (see Lightning's
``UnrepeatedDistributedSampler``, which this mirrors without its shuffling).
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch.distributed as dist
from torch.utils.data import DistributedSampler


class UnpaddedDistributedSampler(DistributedSampler):
    """Rank ``rank``'s share ``rank::num_replicas`` of a sized dataset, in order, nothing repeated or dropped.

    Args:
        dataset: the evaluation dataset (sized).
        num_replicas: the world size (default: the process group's).
        rank: this process's rank (default: the process group's).

    Raises:
        ValueError: fewer items than ranks: a rank would run no batch, and the others would wait for it forever at
            the end-of-epoch reduction.
    """

    def __init__(self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        n = len(dataset)
        if 0 < n < self.num_replicas:
            raise ValueError(
                f"an evaluation split of {n} item(s) cannot be shared by {self.num_replicas} processes without "
                "counting some twice: use fewer devices or a larger split"
            )
        self.num_samples = len(range(self.rank, n, self.num_replicas))
        self.total_size = n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


def evaluation_sampler(dataset: Sized) -> UnpaddedDistributedSampler | None:
    """The sampler of an evaluation loader: an :class:`UnpaddedDistributedSampler` inside a process group of more
    than one rank, else None (the loader's own sequential order)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return UnpaddedDistributedSampler(dataset)
    return None
