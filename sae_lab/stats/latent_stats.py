"""LatentStats: one streaming pass over a dataset collects everything the neuron report needs, per latent.

Counters (firing, class counts, token histograms) are summed; the per-image ``z_max``/``z_avg`` rows are kept
(RAM, or memory-mapped files with ``store_dir``) so that the q-quantile threshold τ, PMI and image-level AUC are
exact; exemplars are an exact streaming top-N. Rank shards merge (counters add, rows concatenate, exemplars
re-select) into exactly what one pass over all the data gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from sae_lab.stats.exemplars import TopExemplars
from sae_lab.stats.ground_truth import token_bin_edges
from sae_lab.stats.knockout import closed_form_knockout
from sae_lab.stats.ranking import class_scores, monosemanticity, pmi
from sae_lab.stats.result import LatentStatsResult
from sae_lab.stats.storage import ChunkedRows
from sae_lab.stats.thresholds import on_stats
from sae_lab.stats.token_histograms import add_token_histograms, token_auc_from_histograms

_COUNTERS = ("token_fire", "act_sum", "image_fire", "class_counts", "class_fire", "hist_all", "hist_on")


class LatentStats:
    """Streaming accumulator of per-latent statistics over images (plain torch).

    Memory: per image 2·M float32 rows (RAM, or files under ``store_dir``); fixed-size state of M·N·T float32
    exemplar maps and, with ground truth, M·(P + 1)·(E + 2) int64 histogram counts (E bin edges, 513 by default).
    Image ids must be unique over the whole (merged) stream.

    Args:
        num_latents: M.
        num_classes: C.
        quantile: q of the on-threshold τ (DESIGN.md: 0.99).
        n_exemplars: top images kept per latent.
        num_primitives: P of the ground truth; None when the dataset has none.
        token_bins: bins of the token-activation histograms (token-level AUC): None for the default, a number of
            log-spaced bins, or explicit edges (see ``ground_truth.token_bin_edges``).
        store_dir: None keeps per-image rows in RAM; a folder keeps them in memory-mapped files there.
        chunk_rows: images per storage chunk.
        device: where counters, histograms and exemplars live (per-image rows are always on the CPU).
        lam: Laplace smoothing λ of the PMI.
    """

    def __init__(
        self,
        num_latents: int,
        num_classes: int,
        quantile: float = 0.99,
        n_exemplars: int = 16,
        num_primitives: int | None = None,
        token_bins: int | Tensor | None = None,
        store_dir: str | Path | None = None,
        chunk_rows: int = 1024,
        device: torch.device | str = "cpu",
        lam: float = 1.0,
    ):
        if not 0.0 <= quantile <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {quantile}")
        self.num_latents, self.num_classes, self.quantile = num_latents, num_classes, quantile
        self.n_exemplars, self.num_primitives, self.lam = n_exemplars, num_primitives, lam
        self.store_dir, self.chunk_rows, self.device = store_dir, chunk_rows, torch.device(device)
        self.edges = token_bin_edges(token_bins)
        self.num_bins = len(self.edges) + 2
        m, dev, long = num_latents, self.device, torch.long
        self.num_images = self.num_tokens = self.num_masked_tokens = 0
        self.num_tokens_per_image: int | None = None
        self.token_fire = torch.zeros(m, dtype=long, device=dev)
        self.act_sum = torch.zeros(m, dtype=torch.float64, device=dev)
        self.image_fire = torch.zeros(m, dtype=long, device=dev)
        self.class_counts = torch.zeros(num_classes, dtype=long, device=dev)
        self.class_fire = torch.zeros(num_classes, m, dtype=long, device=dev)
        p = num_primitives or 0
        self.hist_all = torch.zeros(m * self.num_bins if p else 0, dtype=long, device=dev)
        self.hist_on = torch.zeros(p, m * self.num_bins, dtype=long, device=dev)
        self.exemplars = TopExemplars(m, n_exemplars, dev)
        rows = {"z_max": ((m,), torch.float32), "z_avg": ((m,), torch.float32)}
        rows |= {"labels": ((), torch.long), "image_ids": ((), torch.long)}
        if p:
            rows["primitives"] = ((p,), torch.bool)
        self.rows = {k: ChunkedRows(shape, dt, chunk_rows, store_dir, k) for k, (shape, dt) in rows.items()}

    # ------------------------------------------------------------------------------------------------ update
    @torch.no_grad()
    def update(
        self,
        token_acts: Tensor,
        labels: Tensor,
        image_ids: Tensor,
        primitives: Tensor | None = None,
        token_masks: Tensor | None = None,
        token_chunk: int = 1 << 22,
    ) -> None:
        """Add a batch of images.

        Args:
            token_acts: (B, T, M) dense activations ReLU(pre) of every image token (T = H·W).
            labels: (B,) class labels.
            image_ids: (B,) int64 unique global image ids.
            primitives: (B, P) multi-hot; required when ``num_primitives`` is set. Derived from ``token_masks``
                (any token on) when only those are given.
            token_masks: (B, T, P) bool primitive masks pooled to the token grid; feeds the token-level AUC.
            token_chunk: (token, latent) entries binned at once (bounds the histogram's scratch memory).
        """
        acts = token_acts.detach().to(self.device, torch.float32)
        b, t, m = acts.shape
        if m != self.num_latents:
            raise ValueError(f"token_acts has {m} latents, expected {self.num_latents}")
        labels = labels.to(self.device, torch.long).flatten()
        image_ids = image_ids.to(self.device, torch.long).flatten()
        if len(labels) != b or len(image_ids) != b:
            raise ValueError(f"labels and image_ids need {b} entries")
        if self.num_primitives and primitives is None:
            if token_masks is None:
                raise ValueError("this LatentStats has num_primitives set: pass primitives or token_masks")
            primitives = token_masks.any(1)
        z_max, z_avg = acts.amax(1), acts.mean(1)
        fires = z_max > 0
        nonzero = (acts > 0).reshape(b * t, m)
        self.token_fire += nonzero.sum(0)
        self.act_sum += acts.reshape(b * t, m).sum(0).double()  # a batch's float32 sum, accumulated in float64
        self.image_fire += fires.sum(0)
        self.class_counts += torch.bincount(labels, minlength=self.num_classes)
        self.class_fire.index_add_(0, labels, fires.long())
        self.exemplars.update(z_max, image_ids, labels, acts)
        if self.num_tokens_per_image is None:
            self.num_tokens_per_image = t
        for name, rows in (("z_max", z_max), ("z_avg", z_avg), ("labels", labels), ("image_ids", image_ids)):
            self.rows[name].append(rows)
        if self.num_primitives:
            self.rows["primitives"].append(primitives.to(torch.bool).reshape(b, self.num_primitives))
            if token_masks is not None:
                masks = token_masks.to(self.device).reshape(b * t, -1)
                add_token_histograms(self.hist_all, self.hist_on, acts.reshape(b * t, m), nonzero, masks, self.edges,
                                     token_chunk)  # fmt: skip
                self.num_masked_tokens += b * t
        self.num_images += b
        self.num_tokens += b * t

    # ------------------------------------------------------------------------------------------------ compute
    @torch.no_grad()
    def compute(self, logit_lens: Tensor | None = None, chunk_elements: int = 1 << 22) -> LatentStatsResult:
        """Exact per-latent statistics of everything seen, latents processed in column chunks.

        Args:
            logit_lens: (M, C) w from ``knockout.logit_lens``; enables the closed-form knockout and the score S.
            chunk_elements: images × latents held at once (float64) while computing τ, PMI and AUC.

        Returns:
            A :class:`LatentStatsResult` on the CPU.
        """
        n, m, c = self.num_images, self.num_latents, self.num_classes
        if n == 0:
            raise RuntimeError("LatentStats.compute() before any update()")
        labels = self.rows["labels"].read()
        prims = self.rows["primitives"].read() if self.num_primitives else None
        on = on_stats(self.rows["z_max"], self.rows["z_avg"], labels, prims, c, self.quantile, chunk_elements)
        class_counts = self.class_counts.cpu()
        token_auc = None
        if self.num_primitives and self.num_masked_tokens:
            token_auc = token_auc_from_histograms(self.hist_all, self.hist_on, m)
        token_fire = self.token_fire.cpu()
        result = LatentStatsResult(
            num_images=n,
            num_tokens=self.num_tokens,
            frequency=token_fire.double() / self.num_tokens,
            image_frequency=self.image_fire.cpu().double() / n,
            mean_act=self.act_sum.cpu() / token_fire.clamp_min(1),
            tau=on.tau,
            n_on=on.n_on,
            mean_on_zavg=on.mean_on_zavg,
            class_counts=class_counts,
            class_on_counts=on.class_on_counts,
            class_fire_counts=self.class_fire.t().cpu(),
            pmi=pmi(on.class_on_counts, on.n_on, class_counts, n, self.lam),
            monosemanticity=monosemanticity(on.class_on_counts),
            exemplar_ids=self.exemplars.ids.cpu(),
            exemplar_z_max=self.exemplars.values.cpu(),
            exemplar_labels=self.exemplars.labels.cpu(),
            exemplar_maps=self._exemplar_maps(),
            image_auc=on.image_auc,
            token_auc=token_auc,
        )
        if logit_lens is not None:
            result.logit_lens = logit_lens.detach().double().cpu()
            result.knockout = closed_form_knockout(on.mean_on_zavg, result.logit_lens)
            result.score = class_scores(result.pmi, result.knockout, result.logit_lens)
        return result

    def _exemplar_maps(self) -> Tensor:
        maps = self.exemplars.maps
        return torch.zeros(self.num_latents, self.n_exemplars, 0) if maps is None else maps.cpu()

    # ------------------------------------------------------------------------------------------------ merging
    def _config(self) -> dict[str, Any]:
        return {
            "num_latents": self.num_latents,
            "num_classes": self.num_classes,
            "quantile": self.quantile,
            "n_exemplars": self.n_exemplars,
            "num_primitives": self.num_primitives,
            "token_bins": self.edges,
            "lam": self.lam,
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything on the CPU (per-image rows materialised), for ``all_gather_object`` or saving."""
        return {
            "config": self._config(),
            "scalars": [self.num_images, self.num_tokens, self.num_masked_tokens, self.num_tokens_per_image],
            "counters": {k: getattr(self, k).cpu() for k in _COUNTERS},
            "exemplars": self.exemplars.state_dict(),
            "rows": {k: r.read() for k, r in self.rows.items()},
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], **kwargs) -> LatentStats:
        """Rebuild an accumulator; ``kwargs`` (``store_dir``, ``chunk_rows``, ``device``) choose where it lives."""
        stats = cls(**state["config"], **kwargs)
        stats.merge(state)
        return stats

    def _check_compatible(self, config: dict[str, Any], tokens_per_image: int | None) -> None:
        mine = self._config()
        for key, value in config.items():
            same = torch.equal(value, mine[key]) if isinstance(value, Tensor) else value == mine[key]
            if not same:
                raise ValueError(f"cannot merge LatentStats with different {key}: {value} vs {mine[key]}")
        if None not in (tokens_per_image, self.num_tokens_per_image) and tokens_per_image != self.num_tokens_per_image:
            raise ValueError(f"cannot merge: {tokens_per_image} vs {self.num_tokens_per_image} tokens per image")

    def merge(self, other: LatentStats | dict[str, Any]) -> None:
        """Fold in another shard (an accumulator or its ``state_dict()``): counters add, rows concatenate and
        exemplars are re-selected, giving exactly the statistics of one pass over both streams."""
        if isinstance(other, LatentStats):
            self._check_compatible(other._config(), other.num_tokens_per_image)
            counters = {k: getattr(other, k) for k in _COUNTERS}
            scalars = [other.num_images, other.num_tokens, other.num_masked_tokens, other.num_tokens_per_image]
            self.exemplars.merge(other.exemplars)
            for k, rows in self.rows.items():
                rows.extend(other.rows[k])
        else:
            self._check_compatible(other["config"], other["scalars"][3])
            counters, scalars = other["counters"], other["scalars"]
            incoming = TopExemplars(self.num_latents, self.n_exemplars, self.device)
            incoming.load_state_dict(other["exemplars"])
            self.exemplars.merge(incoming)
            for k, rows in self.rows.items():
                rows.append(other["rows"][k])
        for k in _COUNTERS:
            getattr(self, k).add_(counters[k].to(self.device))
        self.num_images += scalars[0]
        self.num_tokens += scalars[1]
        self.num_masked_tokens += scalars[2]
        self.num_tokens_per_image = self.num_tokens_per_image or scalars[3]

    @classmethod
    def merge_all(cls, shards: list[LatentStats | dict[str, Any]], **kwargs) -> LatentStats:
        """One accumulator holding all shards (accumulators or state dicts), merged in list order."""
        if not shards:
            raise ValueError("merge_all needs at least one shard")
        first = shards[0]
        config = first._config() if isinstance(first, LatentStats) else first["config"]
        merged = cls(**config, **kwargs)
        for shard in shards:
            merged.merge(shard)
        return merged

    def close(self) -> None:
        """Delete the per-image rows (and their files with ``store_dir``)."""
        for rows in self.rows.values():
            rows.close()


def gather_latent_stats(stats: LatentStats, **kwargs) -> LatentStats:
    """All ranks' shards merged (in rank order) on every rank, via ``all_gather_object``; ``stats`` itself when
    torch.distributed is not initialised. ``kwargs`` go to :meth:`LatentStats.merge_all` (e.g. ``store_dir``).

    Image ids must be unique across ranks: drop the duplicates a padding ``DistributedSampler`` adds.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return stats
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, stats.state_dict())
    kwargs.setdefault("store_dir", stats.store_dir)
    kwargs.setdefault("chunk_rows", stats.chunk_rows)
    kwargs.setdefault("device", stats.device)
    return LatentStats.merge_all(states, **kwargs)
