"""From the merged pass to what the report shows: statistics, measured knockout, class ranking, ground truth."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from sae_lab.report import writer
from sae_lab.report.settings import MATCH_AUC
from sae_lab.report.stream import StatsPass
from sae_lab.stats import (
    KnockoutComparison,
    LatentStatsResult,
    PrimitiveMatch,
    RecoveredPrimitives,
    best_primitive,
    compare_knockout,
    logit_lens,
    pearson,
    rank_classes,
    recovered_primitives,
)


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
    lens = logit_lens(sae.W_dec.detach(), sae.sigma, net.classifier.weight.detach()).cpu()
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
