"""The neuron report: one streaming pass of latent statistics over a dataset, then the files of ``reports/<run>/``.

images ─► classifier.features ─► tokens ─► standardise ─► sae.dense_acts ─► LatentStats.update (with the sketch
world's primitive masks pooled to the token grid). The SAE's own firing (its Top-K code) is counted from the same
dense codes, so ``frequency`` and ``dead`` mean what the SAE's L0 and dead % mean. Feature maps of the exemplar
images of the evaluated latents are kept during the pass (a bounded sample), so the knockout can be measured
afterwards without a second pass. Then: compute (logit lens, closed-form Δ⁻, S), measured knockout, class
ranking and ground truth, and the files (``writer``, ``html``), assembled in a staging folder and moved into place.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sae_lab.data.export import pool_masks_any
from sae_lab.data.tokens import fmap_to_tokens, rank_and_world
from sae_lab.report import writer
from sae_lab.report.settings import MATCH_AUC, ReportSettings
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
    rank_classes,
    recovered_primitives,
)

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
    top, anti = rank_classes(result.score, writer.NUM_LISTED)
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
    positions = torch.tensor(sorted(sp.fmaps), dtype=torch.long)
    fmap = torch.stack([sp.fmaps[int(p)] for p in positions]).to(sae.device)
    lookup = torch.full((int(positions.max()) + 1,), -1, dtype=torch.long)
    lookup[positions] = torch.arange(len(positions))
    cand = knockout_latents[~dead[knockout_latents] & (result.n_on[knockout_latents] > 0)]
    ids, vals = result.exemplar_ids[cand], result.exemplar_z_max[cand].double()
    where = lookup[ids.clamp(0, len(lookup) - 1)]
    ok = (ids >= 0) & (ids < len(lookup)) & (where >= 0) & (vals > 0) & (vals >= result.tau[cand, None])
    on = torch.zeros(len(positions), len(result.tau), dtype=torch.bool)
    on[where[ok], cand[:, None].expand_as(ok)[ok]] = True
    latents = cand[ok.any(1)].tolist()
    if not latents:
        return None, float("nan")
    used = on.any(1)
    fmap, on = fmap[used.to(fmap.device)], on[used]
    # When every on-image of each evaluated latent was kept, the dataset's mean_on(z_avg) is the same images'
    # (like for like) and need not be recomputed; otherwise compare_knockout recomputes it on the sample.
    complete = bool((ok.sum(1) == result.n_on[cand])[ok.any(1)].all())
    mean_on = result.mean_on_zavg if complete else None
    classes = torch.cat([top, anti], 1)
    with _torch_threads(1):  # hundreds of tiny forwards: one thread is faster, several only contend
        cmp = compare_knockout(net.head, sae, fmap, lens, classes, on.to(sae.device), mean_on, latents, batch_size)
    corr_dataset = pearson(result.knockout[cmp.latent, cmp.class_index], cmp.measured)
    return cmp, corr_dataset


@contextmanager
def _torch_threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(min(n, old))
    try:
        yield
    finally:
        torch.set_num_threads(old)


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


# ------------------------------------------------------------------------------------------------ inputs
def load_sae(sae_dir: str | Path, device: torch.device | str = "cpu"):
    """The exported SAE in ``sae_dir`` (``cfg.json`` + ``sae.safetensors``), in eval mode without gradients."""
    from sae_lab.models.sae import TopKSAE

    sae_dir = Path(sae_dir)
    if not sae_dir.is_dir():
        raise FileNotFoundError(
            f"SAE folder {sae_dir} does not exist (train one with `fit --config configs/quickstart/sae.yaml`)"
        )
    missing = [f for f in ("cfg.json", "sae.safetensors") if not (sae_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{sae_dir} is not an exported SAE: it lacks {', '.join(missing)}")
    return TopKSAE.load_from_disk(sae_dir, device).eval().requires_grad_(False)


def resolve_classifier(sae, sae_dir: Path, classifier: str | Path | None) -> tuple[Path, list[Path]]:
    """The classifier checkpoint (given, or recorded in the SAE's ``cfg.json``) and the folders to look for
    relative data paths in: a recorded relative path is tried from the working folder, then from each folder
    above the SAE folder (a run moved as a whole still finds its classifier and data cache)."""
    roots = [Path.cwd()]
    if classifier is not None:
        path = Path(classifier)
        if not path.is_file():
            raise FileNotFoundError(f"classifier checkpoint {path} does not exist")
        return path, roots
    recorded = (sae.metadata or {}).get("classifier_checkpoint")
    if not recorded:
        raise ValueError(f"the SAE at {sae_dir} does not record its classifier checkpoint; pass --classifier")
    rel = Path(recorded)
    if rel.is_absolute():
        if not rel.is_file():
            raise FileNotFoundError(f"the SAE's classifier checkpoint {rel} does not exist; pass --classifier")
        return rel, roots
    for root in [Path.cwd(), *Path(sae_dir).resolve().parents]:
        if (root / rel).is_file():
            return root / rel, list(dict.fromkeys([*roots, root]))
    raise FileNotFoundError(
        f"the SAE's classifier checkpoint {recorded} was found neither under the working folder nor above "
        f"{sae_dir}; pass --classifier"
    )


def check_pair(sae, clf, sae_dir: str | Path | None = None) -> None:
    """Raise ValueError when the SAE was not trained on this classifier's explained layer."""
    where = f"the SAE at {sae_dir}" if sae_dir else "the SAE"
    if sae.classifier and sae.classifier != clf.fingerprint:
        raise ValueError(
            f"{where} was trained on classifier {sae.classifier}, but {clf.path} is classifier {clf.fingerprint}: "
            "they do not belong together (give the SAE's own classifier with --classifier)"
        )
    if sae.cfg.d_in != clf.net.channels:
        raise ValueError(
            f"{where} takes {sae.cfg.d_in}-dim tokens, but {clf.path}'s layer {clf.net.layer} gives "
            f"{clf.net.channels}: they do not belong together"
        )
    if sae.layer and sae.layer != clf.net.layer:
        raise ValueError(f"{where} explains layer {sae.layer}, but {clf.path} explains {clf.net.layer}")


def open_split(clf, data: str | None, split: str | None, batch_size: int, roots: list[Path]):
    """The classifier's own images (or ``data``), with ground-truth annotations when the data has them.

    Returns:
        (datamodule, dataset, split name, primitive names or None).
    """
    from datasets.exceptions import DatasetGenerationError

    from sae_lab.data.export import WORLD_META
    from sae_lab.data.tokens import image_datamodule
    from sae_lab.data.world import PRIMITIVES

    if split not in (None, "train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    hparams = dict(clf.data_hparams)
    dm = image_datamodule(hparams, data, batch_size, 0, annotations=True)
    cache = Path(hparams.get("cache_dir", "data_cache"))
    if data is None and dm.is_world and not (dm.source / WORLD_META).exists() and not cache.is_absolute():
        for root in roots:  # the classifier's world cache, relative to where the classifier was found
            moved = image_datamodule({**hparams, "cache_dir": str(root / cache)}, data, batch_size, 0, True)
            if (moved.source / WORLD_META).exists():
                dm = moved
                break
    dm.prepare_data()
    try:
        dm.setup("fit")
    except DatasetGenerationError as e:  # e.g. a parquet split without rows
        raise ValueError(f"cannot read the images at {dm.source} ({e.__cause__ or e}); is a split empty?") from e
    if len(dm.class_names) != len(clf.class_names):
        raise ValueError(
            f"the data at {dm.source} has {len(dm.class_names)} classes, the classifier {len(clf.class_names)}"
        )
    if split is None:
        split = "test" if dm.hparams.test_split else "val"
    dataset = dm.datasets[split]
    if len(dataset) == 0:
        raise ValueError(f"split {split!r} of {dm.source} has no images")
    primitive_names = None
    if getattr(dataset, "annotations", False):
        primitive_names = dm.primitive_names
        meta = Path(str(dm.source)) / WORLD_META
        if primitive_names is None and meta.is_file():
            primitive_names = json.loads(meta.read_text()).get("primitives")
        primitive_names = list(primitive_names or PRIMITIVES)
    return dm, dataset, split, primitive_names


# ------------------------------------------------------------------------------------------------ the report
def build_report(
    sae,
    clf,
    run_dir: str | Path,
    settings: ReportSettings | None = None,
    sae_dir: str | Path | None = None,
    sae_metrics: dict | None = None,
    roots: list[Path] | None = None,
) -> dict[str, Any] | None:
    """The report of an SAE (in memory) on a loaded classifier's images, written to ``run_dir``.

    Under torch.distributed every rank streams its share of the images and rank 0 writes the report.

    Args:
        sae: a TopKSAE (its device is where the pass runs).
        clf: the LoadedClassifier it was trained on.
        run_dir: the report folder (``reports/<run>``); files of other stages there are left alone.
        settings: what to read and keep (None: the defaults).
        sae_dir: where the SAE was read from (for the record).
        sae_metrics: the SAE's validation figures (None: from its metadata).
        roots: folders where relative data paths of the classifier are looked up.

    Returns:
        The ``report.json`` dict on rank 0, None on the other ranks.
    """
    t0 = time.perf_counter()
    run_dir, s = Path(run_dir), settings or ReportSettings()
    if writer.has_report(run_dir) and not s.overwrite:
        raise FileExistsError(f"{run_dir} already holds a report ({writer.NEURONS}); pass --overwrite to replace it")
    check_pair(sae, clf, sae_dir)
    dm, dataset, split, primitive_names = open_split(clf, s.data, s.split, s.batch_size, roots or [Path.cwd()])
    net = clf.net.to(sae.device).eval()
    m = sae.cfg.num_latents
    ko = knockout_subset(m, s.knockout_latents)
    staging = writer.staging_dir(run_dir)
    shutil.rmtree(staging, ignore_errors=True)
    sp = None
    try:
        sp = stream_statistics(net, sae, dataset, len(clf.class_names), len(primitive_names or []) or None,
                               s.n_exemplars, s.quantile, s.batch_size, ko, s.num_workers,
                               rows_store(len(dataset), m, staging), s.progress)  # fmt: skip
        if sp.stats.num_images == 0:
            raise ValueError(f"no readable image in split {split!r} of {dm.source}")
        if rank_and_world()[0] != 0:
            return None
        t1 = time.perf_counter()
        analysis = analyse(sp, sae, net, ko, s.batch_size)
        sp.stats.close()  # the per-image rows (and their memory-mapped files in staging) are no longer needed
        shutil.rmtree(staging / ".stats", ignore_errors=True)
        t2 = time.perf_counter()
        files = _write_images(staging, analysis, sp, dataset, s.progress)
        t3 = time.perf_counter()
        facts = {
            "run": run_dir.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "sae": {"dir": None if sae_dir is None else str(sae_dir), "layer": sae.layer, "d_in": sae.cfg.d_in,
                    "num_latents": m, "k": sae.cfg.k, "classifier": sae.classifier,
                    "metrics": sae_metrics if sae_metrics is not None else (sae.metadata or {}).get("val")},
            "classifier": {"checkpoint": str(clf.path), "fingerprint": clf.fingerprint, "layer": clf.net.layer},
            "data": {"source": str(dm.source), "split": split, "grid": list(sp.grid),
                     "image_size": dm.hparams.image_size, "class_names": list(clf.class_names),
                     "primitive_names": primitive_names},
            "settings": {**s.record(len(ko)), "split": split, "classes_listed": writer.NUM_LISTED},
            "seconds": round(t3 - t0, 2),
            "timings": {"pass": round(sp.seconds, 2), "analysis": round(t2 - t1, 2), "images": round(t3 - t2, 2)},
        }  # fmt: skip
        report = writer.plain(writer.report_summary(analysis, primitive_names=primitive_names, match_auc=MATCH_AUC,
                                                    **facts))  # fmt: skip
        records = writer.neuron_records(analysis, list(clf.class_names), primitive_names, files, sp.rows)
        writer.write_jsonl(staging / writer.NEURONS, records)
        writer.write_json(staging / writer.REPORT, report)
        from sae_lab.report.html import write_index

        write_index(staging, extras_dir=run_dir)
        writer.commit(staging, run_dir, s.overwrite)
        return report
    finally:
        if sp is not None:
            sp.stats.close()
        shutil.rmtree(staging, ignore_errors=True)


def _write_images(staging: Path, a: Analysis, sp: StatsPass, dataset, progress: bool):
    from tqdm.auto import tqdm

    r = a.result
    # Dead latents (never in the Top-K code) get no pictures: the SAE never uses them.
    latents = [i for i in range(len(r.tau)) if r.exemplar_z_max[i, 0] > 0 and not a.dead[i]]
    bar = tqdm(total=len(latents), desc="exemplars", unit="latent", disable=not progress, leave=False)
    try:
        return writer.write_exemplar_images(staging, latents, r.exemplar_ids, r.exemplar_z_max, r.exemplar_maps,
                                            sp.grid, lambda pos: dataset[pos]["image"], bar.update)  # fmt: skip
    finally:
        bar.close()


def quickstart_block(report: dict[str, Any]) -> dict[str, Any]:
    """The ``report`` block of ``reports/quickstart/summary.json``."""
    return {key: report[key] for key in ("primitives_recovered", "primitives_total", "latents_matched", "seconds",
                                         "knockout_corr")}  # fmt: skip


def run_report(
    sae_dir: str | Path,
    run_dir: str | Path,
    classifier: str | Path | None = None,
    device: str | None = None,
    **settings,
) -> dict[str, Any]:
    """``python -m sae_lab report``: the neuron report of the exported SAE in ``sae_dir``, written to ``run_dir``.

    Args:
        sae_dir: the SAE's export folder (``cfg.json`` + ``sae.safetensors``).
        run_dir: the report folder.
        classifier: the classifier checkpoint (None: the one recorded in the SAE's ``cfg.json``).
        device: where the pass runs (None: CUDA when available, else CPU).
        **settings: fields of :class:`ReportSettings` (split, data, n_exemplars, quantile, batch_size, num_workers,
            knockout_latents, overwrite, progress).

    Returns:
        The quickstart summary block: primitives_recovered, primitives_total, latents_matched, seconds,
        knockout_corr.

    Raises:
        FileNotFoundError: no SAE / classifier where pointed.
        FileExistsError: ``run_dir`` holds a report and ``overwrite`` is False.
        ValueError: SAE and classifier do not belong together; an empty split; bad settings.
    """
    t0 = time.perf_counter()
    run_dir, s = Path(run_dir), ReportSettings(**settings)
    if writer.has_report(run_dir) and not s.overwrite:
        raise FileExistsError(f"{run_dir} already holds a report ({writer.NEURONS}); pass --overwrite to replace it")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    sae = load_sae(sae_dir, device)
    ckpt, roots = resolve_classifier(sae, Path(sae_dir), classifier)
    from sae_lab.lit.classifier import load_classifier

    clf = load_classifier(ckpt)
    report = build_report(sae, clf, run_dir, s, sae_dir=sae_dir, roots=roots)
    block = quickstart_block(report)
    block["seconds"] = round(time.perf_counter() - t0, 1)
    return block
