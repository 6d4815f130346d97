"""The neuron report: one streaming pass of latent statistics over a dataset, then the files of ``reports/<run>/``.

images ─► classifier.features ─► tokens ─► standardise ─► sae.dense_acts ─► LatentStats.update (with the sketch
world's primitive masks pooled to the token grid). The SAE's own firing (its Top-K code) is counted from the same
dense codes, so ``frequency`` and ``dead`` mean what the SAE's L0 and dead % mean. Feature maps of the exemplar
images of the evaluated latents are kept during the pass (a bounded sample), so the knockout can be measured
afterwards without a second pass. Then: compute (logit lens, closed-form Δ⁻, S), measured knockout, class
ranking and ground truth, and the files (``writer``, ``html``), assembled in a staging folder and moved into place.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sae_lab.data.tokens import fmap_to_tokens, rank_and_world
from sae_lab.stats import (
    KnockoutComparison,
    LatentStats,
    LatentStatsResult,
    PrimitiveMatch,
    RecoveredPrimitives,
    best_primitive,
    compare_knockout,
    gather_latent_stats,
    logit_lens,
    pearson,
    pool_masks,
    rank_classes,
    recovered_primitives,
)
from sae_lab.report import writer

MATCH_AUC = 0.9
"""A latent matches a primitive, and the primitive is recovered, at image-level AUC ≥ this (DESIGN.md)."""
NUM_CLASSES_LISTED = 5
"""Top classes and anti-classes per latent."""
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


@dataclass
class Analysis:
    """Everything the report files are written from (M latents, C classes, k listed classes)."""

    result: LatentStatsResult
    """Per-latent statistics with the logit lens, closed-form knockout and S."""
    frequency: Tensor
    """(M,) fraction of tokens on which the latent is in the SAE's Top-K code."""
    image_frequency: Tensor
    """(M,) fraction of images with such a token."""
    dead: Tensor
    """(M,) bool: never in the Top-K code on this split."""
    top: Tensor
    """(M, k) top classes by S."""
    anti: Tensor
    """(M, k) anti-classes (lowest S first)."""
    measured: Tensor
    """(M, C) float64 measured Δ⁻ on the sampled on-images (nan where not evaluated)."""
    knockout: KnockoutComparison | None
    """Closed form (same images) vs measured over the evaluated pairs; None when none was evaluated."""
    knockout_corr_dataset: float
    """Correlation of the measured Δ⁻ with the dataset-level closed form over the same pairs."""
    match: PrimitiveMatch | None
    """Best primitive per latent (sketch world only)."""
    recovered: RecoveredPrimitives | None
    """Best live latent per primitive (sketch world only)."""


class _Positioned(Dataset):
    """Items of ``dataset`` at ``positions``, each tagged with its ``position``."""

    def __init__(self, dataset, positions: range):
        self.dataset, self.positions = dataset, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, j: int):
        pos = self.positions[j]
        item = self.dataset[pos]
        return None if item is None else {**item, "position": pos}


# ----------------------------------------------------------------------------------------------------- the pass
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

    from sae_lab.data.sketch import collate_skip_corrupt

    t0 = time.perf_counter()
    device = sae.device
    m, k = sae.cfg.num_latents, sae.cfg.k
    rank, world = rank_and_world()
    positions = range(rank, len(dataset), world)
    loader = DataLoader(_Positioned(dataset, positions), batch_size, num_workers=num_workers,
                        collate_fn=collate_skip_corrupt)  # fmt: skip
    stats = LatentStats(m, num_classes, quantile, n_exemplars, num_primitives, store_dir=store_dir, device=device)
    token_fire = torch.zeros(m, dtype=torch.long, device=device)
    image_fire = torch.zeros(m, dtype=torch.long, device=device)
    rows = torch.full((len(dataset),), -1, dtype=torch.long)
    ko = (torch.empty(0, dtype=torch.long) if knockout_latents is None else knockout_latents).to(device)
    fmaps: dict[int, Tensor] = {}
    grid = (0, 0)
    bar = tqdm(total=len(positions), desc="report", unit="img", disable=not progress, leave=False)
    for batch in loader:
        if batch is None:  # every image of the batch was corrupt (and reported)
            continue
        pos = batch["position"].long()
        rows[pos] = batch["index"].long()
        for sl in _chunks(len(pos), batch, m):
            fmap = net.features(batch["image"][sl].to(device))
            b, _, h, w = fmap.shape
            grid = (h, w)
            acts = sae.dense_acts(sae.standardize(fmap_to_tokens(fmap)))  # (B·T, M)
            # The SAE decodes TopK(ReLU(pre)) = TopK of these dense codes: count its firing from them.
            top_vals, top_idx = acts.topk(k, dim=1, sorted=False)
            fired = top_vals > 0
            token_fire += torch.bincount(top_idx[fired], minlength=m)
            owner = torch.arange(b, device=device).repeat_interleave(h * w)[:, None].expand_as(top_idx)
            on_image = torch.zeros(b, m, dtype=torch.bool, device=device)
            on_image[owner[fired], top_idx[fired]] = True
            image_fire += on_image.sum(0)
            masks = batch.get("masks") if num_primitives else None
            token_masks = None if masks is None else pool_masks(masks[sl].to(device), (h, w))
            primitives = batch["primitives"][sl] if num_primitives else None
            stats.update(acts.view(b, h * w, m), batch["label"][sl], pos[sl], primitives, token_masks)
            if len(ko):
                _keep_exemplar_fmaps(fmaps, stats.exemplars.ids[ko].flatten(), pos[sl].to(device), fmap)
        bar.update(len(pos))
    bar.close()
    if world > 1:
        stats, token_fire, image_fire, rows, fmaps = _merge_ranks(stats, token_fire, image_fire, rows, fmaps, ko)
        grid = tuple(max(g) for g in zip(*_all_gather(grid)))
    return StatsPass(stats, token_fire.cpu(), image_fire.cpu(), fmaps, rows, grid, time.perf_counter() - t0)


def _chunks(n: int, batch: dict, num_latents: int) -> list[slice]:
    """Image slices of a batch small enough that the (tokens, M) dense codes stay under ``_ACT_ELEMENTS``."""
    side = batch["image"].shape[-1]
    tokens_guess = max(1, (side // 8) ** 2)  # a generous guess; the exact grid is only known after features()
    step = max(1, _ACT_ELEMENTS // (tokens_guess * num_latents))
    return [slice(a, min(n, a + step)) for a in range(0, n, step)]


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


# ------------------------------------------------------------------------------------------------- analysis
@torch.no_grad()
def analyse(
    sp: StatsPass,
    sae,
    net,
    knockout_latents: Tensor | None = None,
    batch_size: int = 256,
    match_auc: float = MATCH_AUC,
) -> Analysis:
    """Statistics, knockout (measured on the kept exemplar feature maps), class ranking and ground truth."""
    lens = logit_lens(sae.W_dec.detach(), sae.sigma, net.fc.weight.detach()).cpu()
    result = sp.stats.compute(lens)
    m, c = result.pmi.shape
    dead = sp.topk_token_fire == 0
    top, anti = rank_classes(result.score, NUM_CLASSES_LISTED)
    measured = torch.full((m, c), torch.nan, dtype=torch.float64)
    comparison, corr_dataset = None, float("nan")
    if knockout_latents is not None and len(knockout_latents) and sp.fmaps:
        comparison, corr_dataset = _measure_knockout(sp, sae, net, result, dead, top, anti, knockout_latents,
                                                     lens, batch_size)  # fmt: skip
        if comparison is not None:
            measured[comparison.latent, comparison.class_index] = comparison.measured
    match = recovered = None
    if result.image_auc is not None:
        match = best_primitive(result.image_auc, result.token_auc)
        live_auc = result.image_auc.masked_fill(dead[:, None], torch.nan)
        recovered = recovered_primitives(live_auc, match_auc)
    return Analysis(
        result=result,
        frequency=sp.topk_token_fire.double() / max(1, result.num_tokens),
        image_frequency=sp.topk_image_fire.double() / max(1, result.num_images),
        dead=dead,
        top=top,
        anti=anti,
        measured=measured,
        knockout=comparison,
        knockout_corr_dataset=corr_dataset,
        match=match,
        recovered=recovered,
    )


def _measure_knockout(sp, sae, net, result, dead, top, anti, knockout_latents, lens, batch_size):
    """Measured vs closed-form Δ⁻ for top and anti classes of the live knockout latents, on each latent's
    exemplar images that are on-images (z_max ≥ τ): the whole on-set when n_on ≤ n_exemplars, else its top."""
    positions = sorted(sp.fmaps)
    where = {p: j for j, p in enumerate(positions)}
    fmap = torch.stack([sp.fmaps[p] for p in positions]).to(sae.device)
    on = torch.zeros(len(positions), len(result.tau), dtype=torch.bool)
    latents = []
    for i in knockout_latents.tolist():
        if dead[i] or result.n_on[i] == 0:
            continue
        ids, vals = result.exemplar_ids[i], result.exemplar_z_max[i].double()
        sel = [where[int(p)] for p, v in zip(ids, vals) if p >= 0 and v > 0 and v >= result.tau[i] and int(p) in where]
        if sel:
            on[sel, i] = True
            latents.append(i)
    if not latents:
        return None, float("nan")
    classes = torch.cat([top, anti], 1)
    cmp = compare_knockout(net.head, sae, fmap, lens, classes, on.to(sae.device), None, latents, batch_size)
    corr_dataset = pearson(result.knockout[cmp.latent, cmp.class_index], cmp.measured)
    return cmp, corr_dataset


def knockout_subset(num_latents: int, limit: int | None) -> Tensor:
    """Latents whose knockout is measured: all, or ``limit`` evenly spaced ids (bounds the kept feature maps)."""
    if limit is None or limit >= num_latents:
        return torch.arange(num_latents)
    if limit <= 0:
        return torch.empty(0, dtype=torch.long)
    return torch.linspace(0, num_latents - 1, limit).round().long().unique()


def rows_store(num_images: int, num_latents: int, staging: Path) -> Path | None:
    """Where LatentStats keeps its per-image rows: RAM when small, memory-mapped files in staging otherwise."""
    return staging / ".stats" if num_images * num_latents * 8 > _ROWS_IN_RAM else None


def clean_staging(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
