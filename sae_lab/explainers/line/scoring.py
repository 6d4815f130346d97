"""Scoring concepts for many latents at once: images → classifier → SAE → per-image ``z_max`` of every latent,
against the same latents' ``z_max`` on real control images (computed once per run and cached).

Metric definitions (DESIGN.md, "concept AUC / MAD"): positives = a latent's ``z_max`` on a concept's generated
images, negatives = its ``z_max`` on the control images; AUC = ROC-AUC(positives vs negatives) with ties counted
½, MAD = (mean_pos − mean_ctrl) / std_ctrl (Bessel), mean = mean_pos.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image
from torch import Tensor

from sae_lab.data.images import image_to_tensor
from sae_lab.stats import image_activations, rank_auc
from sae_lab.stats.concept import METRICS, ConceptScores, control_std  # noqa: F401 -- METRICS re-exported
from sae_lab.stats.concept import concept_scores as shared_concept_scores

logger = logging.getLogger(__name__)

MAD_MIN_STD = 1e-6
"""Floor of std_ctrl in LINE's MAD, so that a latent silent on every control image still ranks concepts (finitely)."""


def concept_scores(pos: Tensor, ctrl: Tensor) -> ConceptScores:
    """AUC, MAD and mean activation of every latent at once, for ranking LINE's concepts.

    The scores are :func:`sae_lab.stats.concept_scores` (the one implementation); LINE then floors std_ctrl at
    :data:`MAD_MIN_STD` (the shared MAD is null where std_ctrl = 0), because its pool needs a finite value to rank
    by. ``evaluate`` uses the shared function as is (MAD null).

    Args:
        pos: (n, L) ``z_max`` of L latents on n concept images.
        ctrl: (N, L) ``z_max`` of the same latents on N control images.
    """
    s = shared_concept_scores(pos, ctrl)
    if len(pos) == 0 or len(ctrl) == 0:
        return s
    floored = (pos.double().mean(0) - ctrl.double().mean(0)) / control_std(ctrl).clamp_min(MAD_MIN_STD)
    return s._replace(mad=floored)


class LatentScorer:
    """Classifier features + SAE dense code: a batch of images → per-image ``z_max`` of every latent.

    Args:
        net: The classifier network (``features(x) -> (B, C, H, W)``).
        sae: The SAE (``standardize``, ``dense_acts``).
        image_size: The classifier's input size S; every image is converted with ``image_to_tensor``.
        device: Where both run.
        batch_size: Images per forward pass.
    """

    def __init__(self, net, sae, image_size: int, device: str | torch.device = "cpu", batch_size: int = 64) -> None:
        self.net, self.sae, self.image_size = net, sae, image_size
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.images_scored = 0

    @property
    def num_latents(self) -> int:
        return int(self.sae.W_dec.shape[0])

    @torch.no_grad()
    def z_max(self, x: Tensor) -> Tensor:
        """(B, 1, S, S) ink tensors → (B, M) float32 ``z_max`` (dense code ReLU(pre), max over tokens), on CPU."""
        out = []
        for chunk in x.split(self.batch_size):
            fmap = self.net.features(chunk.to(self.device))
            out.append(image_activations(self.sae, fmap.to(self.sae.dtype))[0].float().cpu())
            self.images_scored += len(chunk)
        return torch.cat(out) if out else torch.zeros(0, self.num_latents)

    def z_max_images(self, images: Sequence[Image.Image]) -> Tensor:
        """PIL images (any size or mode) → (B, M) ``z_max``; converted to 1-channel ink the classifier's way."""
        if not images:
            return torch.zeros(0, self.num_latents)
        return self.z_max(torch.stack([image_to_tensor(im, self.image_size) for im in images]))


class ControlSet(NamedTuple):
    """Real images' activations: the negatives of every concept score."""

    z_max: Tensor
    """(N, M) float32 ``z_max`` of every latent on N control images."""
    labels: Tensor
    """(N,) int64 class of each image."""
    primitives: Tensor | None
    """(N, P) float32 primitive multi-hot (sketch world), else None."""
    class_names: list[str]
    primitive_names: list[str] | None

    def class_profile(self, latent: int) -> Tensor:
        """(C,) float64 mean ``z_max`` of ``latent`` over each class's control images (0 for an absent class)."""
        c = len(self.class_names)
        sums = torch.zeros(c, dtype=torch.float64).index_add_(0, self.labels, self.z_max[:, latent].double())
        counts = torch.bincount(self.labels, minlength=c).double()
        return sums / counts.clamp_min(1)

    def top_classes(self, latent: int, k: int = 5) -> list[str]:
        """The ``k`` classes whose control images activate ``latent`` most (mean ``z_max``)."""
        order = torch.argsort(self.class_profile(latent), descending=True, stable=True)
        return [self.class_names[int(i)] for i in order[:k]]

    def ground_truth(self) -> tuple[Tensor, Tensor] | None:
        """Each latent's best primitive and its image-level AUC on the control images (sketch world), else None."""
        if self.primitives is None:
            return None
        auc = rank_auc(self.z_max.double(), self.primitives)
        filled = auc.nan_to_num(nan=-1.0)
        best = filled.argmax(1)
        return best, auc.gather(1, best[:, None])[:, 0]


def _cache_key(key: dict) -> str:
    return json.dumps(key, sort_keys=True)


def load_control(path: Path, key: dict) -> ControlSet | None:
    """The cached control set at ``path`` if it was computed with exactly ``key``; else None."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("key") != _cache_key(key):
            return None
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 -- safe_open has no __iter__
    names = json.loads(meta["names"])
    return ControlSet(
        tensors["z_max"], tensors["labels"], tensors.get("primitives"), names["classes"], names["primitives"]
    )


def save_control(path: Path, control: ControlSet, key: dict) -> None:
    from safetensors.torch import save_file

    tensors = {"z_max": control.z_max.contiguous(), "labels": control.labels.contiguous()}
    if control.primitives is not None:
        tensors["primitives"] = control.primitives.contiguous()
    names = json.dumps({"classes": control.class_names, "primitives": control.primitive_names})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata={"key": _cache_key(key), "names": names})
    tmp.replace(path)


@torch.no_grad()
def compute_control(
    scorer: LatentScorer,
    dataset,
    n_images: int,
    seed: int,
    class_names: list[str],
    primitive_names: list[str] | None = None,
    num_workers: int = 0,
) -> ControlSet:
    """``z_max`` of every latent on ``n_images`` images of ``dataset`` (a seeded random subset, all when fewer).

    Args:
        dataset: Items with ``image`` (1, S, S) and ``label``; with ``primitives`` (P,) in the sketch world.
    """
    from torch.utils.data import DataLoader, Subset

    from sae_lab.data.images import collate_skip_corrupt

    n = min(n_images, len(dataset))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    loader = DataLoader(Subset(dataset, order.tolist()), batch_size=scorer.batch_size, num_workers=num_workers,
                        collate_fn=collate_skip_corrupt)  # fmt: skip
    z_max, labels, prims = [], [], []
    for batch in loader:
        if batch is None:
            continue
        z_max.append(scorer.z_max(batch["image"]))
        labels.append(batch["label"].long())
        if "primitives" in batch:
            prims.append(batch["primitives"].float())
    if not z_max:
        raise ValueError("no readable control images")
    primitives = torch.cat(prims) if prims and len(prims) == len(z_max) else None
    return ControlSet(torch.cat(z_max), torch.cat(labels), primitives, list(class_names),
                      list(primitive_names) if primitives is not None and primitive_names else None)  # fmt: skip
