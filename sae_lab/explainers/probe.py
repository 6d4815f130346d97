"""The probe set: real images of the run's split with every latent's per-image activation, computed once.

Every explainer and ``evaluate`` reads latents' behaviour on real images from here: LE fits on it, DnD and
patches take each latent's top images from it, ``evaluate`` simulates on its held-out part. One pass of
classifier + SAE over the images serves every latent and every method; the result is cached in
``reports/<run>/probe/<key>.safetensors`` under a key naming the SAE, the split, the number of images and the seed.

Activations are from the dense code ReLU(pre) (DESIGN: statistics), ``z_max`` = max over the image's tokens,
``z_avg`` = their mean.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from sae_lab.run.files import RunFiles
from sae_lab.run.load import LoadedRun

logger = logging.getLogger(__name__)

SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
"""fit / select / held-out shares of the probe images (LE's protocol)."""


@dataclass
class ProbeSet:
    """Real images and every latent's activation on them."""

    rows: Tensor
    """(N,) int64 rows of the dataset split."""
    images: Tensor
    """(N, S, S) uint8 ink (0 paper … 255 stroke) at the classifier's input size."""
    labels: Tensor
    """(N,) int64 class of each image."""
    primitives: Tensor | None
    """(N, P) float32 primitive multi-hot (sketch world), else None."""
    z_max: Tensor
    """(N, M) float32 per-image max of each latent's dense activation."""
    z_avg: Tensor
    """(N, M) float32 per-image mean of each latent's dense activation."""
    class_names: list[str]
    primitive_names: list[str] | None
    split: str
    """The dataset split the images come from."""

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def num_latents(self) -> int:
        return int(self.z_max.shape[1])

    def pil(self, i: int) -> Image.Image:
        """Image ``i`` as a grey sketch (dark strokes on white paper), annotated for the offline perception
        backend: ``info["primitives"]`` (names) and ``info["class"]`` when known."""
        img = Image.fromarray(255 - self.images[i].numpy(), mode="L")
        img.info["class"] = self.class_names[int(self.labels[i])]
        if self.primitives is not None and self.primitive_names:
            img.info["primitives"] = [self.primitive_names[p] for p in torch.nonzero(self.primitives[i])[:, 0].tolist()]
        return img

    def ink(self, idx: Tensor | list[int] | None = None) -> Tensor:
        """(n, 1, S, S) float32 ink in [0, 1], the classifier's input."""
        images = self.images if idx is None else self.images[torch.as_tensor(idx, dtype=torch.long)]
        return images.float().div(255.0).unsqueeze(1)

    def activations(self, pooling: str = "avg") -> Tensor:
        """(N, M) ``z_avg`` (``"avg"``) or ``z_max`` (``"max"``)."""
        if pooling not in ("avg", "max"):
            raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")
        return self.z_avg if pooling == "avg" else self.z_max

    def partition(self, seed: int = 0, fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> dict[str, Tensor]:
        """A seeded split of the image indices into ``fit`` / ``select`` / ``heldout`` (sorted index tensors)."""
        if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
            raise ValueError(f"fractions must be three positive shares adding up to 1, got {fractions}")
        n = len(self)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        a = int(round(fractions[0] * n))
        b = a + int(round(fractions[1] * n))
        return {"fit": order[:a].sort().values, "select": order[a:b].sort().values, "heldout": order[b:].sort().values}

    def top_images(self, latent: int, k: int = 10, pooling: str = "avg", among: Tensor | None = None) -> Tensor:
        """Indices of the ``k`` images with the largest activation of ``latent`` (> 0 only), best first."""
        acts = self.activations(pooling)[:, latent]
        idx = torch.arange(len(self)) if among is None else among
        vals = acts[idx]
        order = torch.argsort(vals, descending=True, stable=True)
        order = order[vals[order] > 0][:k]
        return idx[order]


def _key(loaded: LoadedRun, split: str, n: int | None, seed: int, data: str | None) -> dict:
    return {"sae": loaded.sae_id, "split": split, "n": n, "seed": seed, "data": data, "version": 1}


def _path(files: RunFiles, key: dict) -> Path:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return files.root / "probe" / f"{key['split']}-{digest}.safetensors"


def _save(path: Path, probe: ProbeSet, key: dict) -> None:
    from safetensors.torch import save_file

    tensors = {name: getattr(probe, name).contiguous() for name in ("rows", "images", "labels", "z_max", "z_avg")}
    if probe.primitives is not None:
        tensors["primitives"] = probe.primitives.contiguous()
    meta = {"key": json.dumps(key, sort_keys=True), "classes": json.dumps(probe.class_names),
            "primitives": json.dumps(probe.primitive_names), "split": probe.split}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


def _load(path: Path, key: dict) -> ProbeSet | None:
    from safetensors import safe_open

    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("key") != json.dumps(key, sort_keys=True):
            return None
        t = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 -- safe_open has no __iter__
    return ProbeSet(t["rows"], t["images"], t["labels"], t.get("primitives"), t["z_max"], t["z_avg"],
                    json.loads(meta["classes"]), json.loads(meta["primitives"]), meta["split"])  # fmt: skip


class _WithRow(torch.utils.data.Dataset):
    """Items of ``dataset`` with their row in the split, so a skipped corrupt image shifts nothing."""

    def __init__(self, dataset, rows: Tensor) -> None:
        self.dataset, self.rows = dataset, rows

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        item = self.dataset[i]
        return None if item is None else {**item, "row": int(self.rows[i])}


@torch.no_grad()
def compute_probe(loaded: LoadedRun, dataset, split: str, n: int | None = None, seed: int = 0,
                  primitive_names: list[str] | None = None, batch_size: int = 256) -> ProbeSet:  # fmt: skip
    """Runs classifier + SAE once over ``n`` images of ``dataset`` (a seeded subset; all when None or fewer).

    Args:
        dataset: items with ``image`` (1, S, S) ink and ``label``; ``primitives`` (P,) on the sketch world.
    """
    from torch.utils.data import DataLoader, Subset

    from sae_lab.data.images import collate_skip_corrupt
    from sae_lab.stats import image_activations

    total = len(dataset)
    if n is None or n >= total:
        rows = torch.arange(total)
    else:
        rows = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values
    loader = DataLoader(_WithRow(Subset(dataset, rows.tolist()), rows), batch_size=batch_size,
                        collate_fn=collate_skip_corrupt)  # fmt: skip
    device = next(loaded.sae.parameters()).device
    kept, images, labels, prims, z_max, z_avg = [], [], [], [], [], []
    for batch in loader:
        if batch is None:
            continue
        x = batch["image"]
        fmap = loaded.classifier.net.features(x.to(device))
        zm, za = image_activations(loaded.sae, fmap.to(loaded.sae.dtype))
        z_max.append(zm.float().cpu())
        z_avg.append(za.float().cpu())
        images.append((x[:, 0].clamp(0, 1) * 255).round().to(torch.uint8))
        labels.append(batch["label"].long())
        kept.append(batch["row"].long())
        if "primitives" in batch:
            prims.append(batch["primitives"].float())
    if not z_max:
        raise ValueError(f"no readable images in split {split!r}")
    got_rows = torch.cat(kept)  # a corrupt image is skipped (and reported) with its row
    primitives = torch.cat(prims) if prims and len(prims) == len(z_max) else None
    names = list(primitive_names) if primitives is not None and primitive_names else None
    return ProbeSet(got_rows, torch.cat(images), torch.cat(labels), primitives, torch.cat(z_max), torch.cat(z_avg),
                    list(loaded.classifier.class_names), names, split)  # fmt: skip


def probe_set(loaded: LoadedRun, files: RunFiles, split: str | None = None, n: int | None = 2000, seed: int = 0,
              data: str | None = None, batch_size: int = 256) -> ProbeSet:  # fmt: skip
    """The run's probe set, from the cache or computed (and cached).

    Args:
        loaded: the run's models (:func:`~sae_lab.run.load_run`).
        files: the run's report folder.
        split: ``train`` | ``val`` | ``test`` (None: ``test`` when the data has one, else ``val``).
        n: images (a seeded random subset; None: the whole split).
        seed: the subset's seed.
        data: an image source overriding the classifier's own.
    """
    from sae_lab.report.inputs import open_split

    key = _key(loaded, split or "default", n, seed, data)
    path = _path(files, key)
    cached = _load(path, key)
    if cached is not None:
        return cached
    _, dataset, split_name, prims = open_split(loaded.classifier, data, split, batch_size, loaded.roots)
    probe = compute_probe(loaded, dataset, split_name, n, seed, prims, batch_size)
    _save(path, probe, key)
    logger.info("probe set: %d images of split %s, %d latents -> %s", len(probe), split_name, probe.num_latents, path)
    return probe


__all__ = ["SPLIT_FRACTIONS", "ProbeSet", "compute_probe", "probe_set"]
