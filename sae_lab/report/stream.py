"""The report's one streaming pass: images ─► classifier.features ─► tokens ─► standardise ─► sae.dense_acts ─►
LatentStats.update (with the sketch world's primitive masks pooled to the token grid).

The SAE's own firing (its Top-K code) is counted from the same dense codes, so ``frequency`` and ``dead`` mean what
the SAE's L0 and dead % mean. Feature maps of the exemplar images of the evaluated latents are kept during the pass
(a bounded sample), so the knockout can be measured afterwards without a second pass. Under torch.distributed every
rank streams its share and the shards are merged on every rank.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sae_lab.data.export import pool_masks_any
from sae_lab.data.tokens import rank_and_world
from sae_lab.models.tokens import fmap_to_tokens
from sae_lab.stats import LatentStats, gather_latent_stats

_ROWS_IN_RAM = 2 << 30
"""Per-image statistics rows above this many bytes go to memory-mapped files in the staging folder."""
_ACT_ELEMENTS = 1 << 24
"""Dense activations (tokens × latents) computed at once; larger batches are split."""


@dataclass
class StatsPass:
    """What the streaming pass leaves behind (M latents)."""

    stats: LatentStats
    """The accumulator (all ranks merged)."""
    topk_token_fire: Tensor
    """(M,) int64 tokens on which the latent is in the SAE's Top-K code with activation > 0."""
    topk_image_fire: Tensor
    """(M,) int64 images with at least one such token."""
    fmaps: dict[int, Tensor]
    """Dataset position → (C, H, W) feature map, for the exemplar images of the knockout latents."""
    rows: Tensor
    """(n,) int64 source row (the dataset's ``index``) of each dataset position; −1 where unseen."""
    grid: tuple[int, int]
    """(H, W) of the token grid."""
    seconds: float
    """Wall time of the pass."""


class _Positioned(Dataset):
    """Items of ``dataset`` at ``positions``, tagged with their ``position``; pixel masks pooled to the token grid
    here (``token_masks`` (T, P)), so that batches never carry (B, P, S, S) masks."""

    def __init__(self, dataset, positions: range, grid: tuple[int, int]):
        self.dataset, self.positions, self.grid = dataset, positions, grid

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, j: int):
        pos = self.positions[j]
        get = getattr(self.dataset, "get", None)
        item = get(pos, mask_grid=self.grid) if get is not None else self.dataset[pos]
        if item is None:
            return None
        item = {**item, "position": pos}
        if "masks" in item:
            item["token_masks"] = torch.from_numpy(pool_masks_any(item.pop("masks"), self.grid))
        return item


def _token_grid(net, dataset, positions: range, device) -> tuple[int, int]:
    """(H, W) of the feature map, from a blank image of the dataset's image size ((0, 0) without readable images)."""
    for pos in positions:
        item = dataset[pos]
        if item is not None:
            blank = torch.zeros(1, *item["image"].shape, device=device)
            return tuple(net.features(blank).shape[2:])
    return (0, 0)


@torch.no_grad()
def stream_statistics(
    net,
    sae,
    dataset,
    num_classes: int,
    num_primitives: int | None = None,
    n_exemplars: int = 16,
    quantile: float = 0.99,
    batch_size: int = 256,
    knockout_latents: Tensor | None = None,
    num_workers: int = 0,
    store_dir: Path | None = None,
    progress: bool = True,
) -> StatsPass:
    """One pass over ``dataset`` (this rank's share under torch.distributed, then merged on every rank).

    Args:
        net: the classifier (``features``), on the SAE's device.
        sae: the SAE.
        dataset: items with ``image`` (1, S, S), ``label``, ``index`` and, with ground truth, ``primitives`` (P,)
            and ``masks`` (P, S, S).
        num_classes: C.
        num_primitives: P, or None without ground truth.
        n_exemplars: exemplars per latent.
        quantile: q of the on-threshold τ.
        batch_size: images per forward.
        knockout_latents: (L,) latents whose exemplar feature maps are kept for the measured knockout.
        num_workers: DataLoader workers.
        store_dir: folder for memory-mapped per-image rows (None: RAM).
        progress: show a progress bar.
    """
    from tqdm.auto import tqdm

    from sae_lab.data.images import collate_skip_corrupt

    t0 = time.perf_counter()
    device = sae.device
    m, k = sae.cfg.num_latents, sae.cfg.k
    rank, world = rank_and_world()
    positions = range(rank, len(dataset), world)
    grid = _token_grid(net, dataset, positions, device)
    loader = DataLoader(_Positioned(dataset, positions, grid), batch_size, num_workers=num_workers,
                        collate_fn=collate_skip_corrupt)  # fmt: skip
    stats = LatentStats(m, num_classes, quantile, n_exemplars, num_primitives, store_dir=store_dir, device=device)
    token_fire = torch.zeros(m, dtype=torch.long, device=device)
    image_fire = torch.zeros(m, dtype=torch.long, device=device)
    rows = torch.full((len(dataset),), -1, dtype=torch.long)
    ko = (torch.empty(0, dtype=torch.long) if knockout_latents is None else knockout_latents).to(device)
    fmaps: dict[int, Tensor] = {}
    bar = tqdm(total=len(positions), desc="report", unit="img", disable=not progress, leave=False)
    for batch in loader:
        if batch is None:  # every image of the batch was corrupt (and reported)
            continue
        pos = batch["position"].long()
        rows[pos] = batch["index"].long()
        fmap_all = net.features(batch["image"].to(device))
        _, _, h, w = fmap_all.shape
        step = max(1, _ACT_ELEMENTS // (h * w * m))
        for a in range(0, len(pos), step):
            sl = slice(a, a + step)
            fmap = fmap_all[sl]
            b = len(fmap)
            acts = sae.dense_acts(sae.standardize(fmap_to_tokens(fmap)))  # (B·T, M)
            # The SAE decodes TopK(ReLU(pre)) = TopK of these dense codes: count its firing from them.
            top_vals, top_idx = acts.topk(k, dim=1, sorted=False)
            fired = top_vals > 0
            token_fire += torch.bincount(top_idx[fired], minlength=m)
            owner = torch.arange(b, device=device).repeat_interleave(h * w)[:, None].expand_as(top_idx)
            on_image = torch.zeros(b, m, dtype=torch.bool, device=device)
            on_image[owner[fired], top_idx[fired]] = True
            image_fire += on_image.sum(0)
            masks = batch.get("token_masks") if num_primitives else None
            token_masks = None if masks is None else masks[sl].to(device)
            primitives = batch["primitives"][sl] if num_primitives else None
            stats.update(acts.view(b, h * w, m), batch["label"][sl], pos[sl], primitives, token_masks)
            if len(ko):
                _keep_exemplar_fmaps(fmaps, stats.exemplars.ids[ko].flatten(), pos[sl].to(device), fmap)
        bar.update(len(pos))
    bar.close()
    if dist.is_available() and dist.is_initialized():
        stats, token_fire, image_fire, rows, fmaps = _merge_ranks(stats, token_fire, image_fire, rows, fmaps, ko)
        grid = tuple(max(g) for g in zip(*_all_gather(grid)))
    return StatsPass(stats, token_fire.cpu(), image_fire.cpu(), fmaps, rows, grid, time.perf_counter() - t0)


def _keep_exemplar_fmaps(fmaps: dict[int, Tensor], needed: Tensor, pos: Tensor, fmap: Tensor) -> None:
    """Store the batch's feature maps that are current exemplars of a knockout latent; drop evicted ones."""
    hit = torch.isin(pos, needed).nonzero().squeeze(1)
    for j in hit.tolist():
        fmaps[int(pos[j])] = fmap[j].to("cpu", copy=True)
    if fmaps:
        keys = torch.tensor(list(fmaps), dtype=torch.long, device=needed.device)
        for key in keys[~torch.isin(keys, needed)].tolist():
            del fmaps[key]


def _all_gather(obj: Any) -> list[Any]:
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _merge_ranks(stats, token_fire, image_fire, rows, fmaps, ko):
    """Merge the ranks' shards: statistics via ``gather_latent_stats``, counters summed, feature maps united."""
    stats = gather_latent_stats(stats)
    token_fire = torch.stack([t.to(token_fire.device) for t in _all_gather(token_fire.cpu())]).sum(0)
    image_fire = torch.stack([t.to(image_fire.device) for t in _all_gather(image_fire.cpu())]).sum(0)
    rows = torch.stack(_all_gather(rows)).amax(0)
    needed = set(stats.exemplars.ids[ko].flatten().tolist())
    merged: dict[int, Tensor] = {}
    for part in _all_gather({p: f for p, f in fmaps.items() if p in needed}):
        merged.update(part)
    return stats, token_fire, image_fire, rows, merged


def rows_store(num_images: int, num_latents: int, staging: Path) -> Path | None:
    """Where LatentStats keeps its per-image rows: RAM when small, memory-mapped files in staging otherwise."""
    return staging / ".stats" if num_images * num_latents * 8 > _ROWS_IN_RAM else None
