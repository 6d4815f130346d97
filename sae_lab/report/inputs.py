"""The images a report (and every later stage) reads: the classifier's own split, with annotations when the data has
them. The SAE and the classifier are found and loaded by :func:`sae_lab.run.load_run`."""

from __future__ import annotations

import json
from pathlib import Path


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
