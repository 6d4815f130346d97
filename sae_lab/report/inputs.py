"""What a report (and every later stage) reads: the exported SAE, its classifier, and the classifier's images."""

from __future__ import annotations

import json
from pathlib import Path

import torch


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
