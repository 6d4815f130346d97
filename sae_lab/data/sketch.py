"""SketchDataModule: TU-Berlin-format parquet (local folder or hub id) or the built-in sketch world, split into
train/val/test :class:`~sae_lab.data.sketch_dataset.SketchDataset` objects.

Both go through the same path: the world is first written as parquet (once, into ``cache_dir``)
and then read with ``datasets`` like any other source, memory-mapped, never loaded whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from sae_lab.data.export import WORLD_META, export_world
from sae_lab.data.images import collate_skip_corrupt
from sae_lab.data.samplers import evaluation_sampler
from sae_lab.data.sketch_dataset import SketchDataset
from sae_lab.data.world import CLASSES, PRIMITIVES

log = logging.getLogger(__name__)
REQUIRED_COLUMNS = ("image", "label")


class DataSourceError(ValueError):
    """The configured data source is missing or not in the TU-Berlin schema."""


def looks_like_hub_id(data: str) -> bool:
    return data.count("/") == 1 and not data.startswith((".", "/", "~")) and not os.path.exists(data)


def parquet_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.parquet") if not any(part.startswith(".") for part in p.parts))


def read_schema_info(folder: Path) -> tuple[list[str], list[str] | None]:
    """Column names and ClassLabel names of the first parquet file, read from its footer only."""
    import pyarrow.parquet as pq

    files = parquet_files(folder)
    if not files:
        raise DataSourceError(f"no .parquet files under {folder}")
    schema = pq.read_schema(files[0])
    names = None
    meta = (schema.metadata or {}).get(b"huggingface")
    if meta:
        label = json.loads(meta).get("info", {}).get("features", {}).get("label", {})
        names = label.get("names")
    return list(schema.names), names


def check_columns(columns, where: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataSourceError(
            f"{where} lacks the column(s) {missing} of the TU-Berlin schema "
            f"(expected 'image' {{bytes: PNG}} and 'label' int); it has {list(columns)}"
        )


class SketchDataModule(L.LightningDataModule):
    """Sketches for the classifier and every later stage.

    Args:
        data: "world" for the built-in sketch world, a local folder of TU-Berlin-format parquet, or a
            Hugging Face hub id such as "kmewhort/tu-berlin-png".
        image_size: side of the square 1-channel images fed to the classifier.
        batch_size: images per batch (per device under DDP).
        num_workers: DataLoader worker processes.
        val_fraction: share of the training split held out, stratified, as validation.
        split_seed: seed of the stratified validation split.
        augment: apply training augmentation (affine, flip, stroke thickness).
        erase: probability that a training image also loses a random rectangle (cutout, 15–40 % of its area), so
            the classifier learns to use every part of a sketch, not only the one stroke that decides its class.
        test_split: split used by `test`; None uses the held-out validation set (TU-Berlin's own
            test split overlaps train).
        annotations: also yield the sketch world's primitive multi-hot and masks.
        world_train: sketch world training images.
        world_test: sketch world held-out test images.
        world_seed: sketch world seed.
        cache_dir: where the sketch world's parquet is written.
    """

    def __init__(
        self,
        data: str = "world",
        image_size: int = 64,
        batch_size: int = 128,
        num_workers: int = 2,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        augment: bool = True,
        erase: float = 0.0,
        test_split: str | None = None,
        annotations: bool = False,
        world_train: int = 8000,
        world_test: int = 1000,
        world_seed: int = 0,
        cache_dir: str = "data_cache",
    ):
        super().__init__()
        self.save_hyperparameters()
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if not 0.0 <= erase <= 1.0:
            raise ValueError(f"erase is a probability in [0, 1], got {erase}")
        self.is_world = data == "world"
        if self.is_world:
            # The class table is part of the key: a world cached by an older table is never reused.
            spec = json.dumps([world_seed, image_size, world_train, world_test, PRIMITIVES, CLASSES])
            key = hashlib.sha1(spec.encode()).hexdigest()[:10]
            self.source = Path(cache_dir) / f"world-{key}"
            self._class_names: list[str] | None = list(CLASSES)
        elif looks_like_hub_id(data):
            self.source = data
            self._class_names = None
        else:
            self.source = Path(data).expanduser()
            if not self.source.exists():
                raise DataSourceError(
                    f"data path {str(self.source)!r} does not exist (give a folder of TU-Berlin-format parquet, "
                    "a hub id such as 'kmewhort/tu-berlin-png', or 'world')"
                )
            columns, self._class_names = read_schema_info(self.source)
            check_columns(columns, f"parquet under {self.source}")
        self.datasets: dict[str, SketchDataset] = {}

    # ----------------------------------------------------------------- metadata
    @property
    def class_names(self) -> list[str]:
        if self._class_names is None:
            self._class_names = self._load_class_names()
        return self._class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def primitive_names(self) -> list[str] | None:
        return list(PRIMITIVES) if self.is_world else None

    def _load_class_names(self) -> list[str]:
        import datasets

        if isinstance(self.source, str):  # hub id: features come from the dataset card
            features = datasets.load_dataset_builder(self.source).info.features or {}
            label = features.get("label")
            if label is not None and hasattr(label, "names"):
                return list(label.names)
        ds = self._load_split("train")
        label = ds.features["label"]
        if hasattr(label, "names"):
            return list(label.names)
        n = int(max(ds["label"])) + 1
        warnings.warn(f"'label' of {self.source} has no class names; using class_0..class_{n - 1}", stacklevel=2)
        return [f"class_{i}" for i in range(n)]

    # ----------------------------------------------------------------- loading
    def prepare_data(self) -> None:
        if self.is_world and not (self.source / WORLD_META).exists():
            hp = self.hparams
            export_world(self.source, hp.world_train, hp.world_test, hp.image_size, hp.world_seed, overwrite=True)

    def _load_split(self, split: str):
        import datasets

        try:
            dsd = datasets.load_dataset(str(self.source))
        except FileNotFoundError as e:
            raise DataSourceError(f"cannot load data from {self.source}: {e}") from e
        if split not in dsd:
            raise DataSourceError(f"{self.source} has no split {split!r}; it has {list(dsd)}")
        ds = dsd[split]
        check_columns(ds.column_names, f"split {split!r} of {self.source}")
        ds = ds.cast_column("image", datasets.Image(decode=False))
        if "primitive_masks" in ds.column_names:
            ds = ds.cast_column("primitive_masks", datasets.Image(decode=False))
        if not isinstance(ds.features["label"], datasets.ClassLabel):
            ds = ds.cast_column("label", datasets.ClassLabel(names=self.class_names))
        return ds

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.is_world:
            self.prepare_data()  # no-op when rank 0 already wrote it
        hp = self.hparams
        full = self._load_split("train")
        if len(full) < 2:
            raise DataSourceError(f"{self.source} has {len(full)} training rows; need at least 2")
        full = full.add_column("row", list(range(len(full))))
        try:
            parts = full.train_test_split(test_size=hp.val_fraction, stratify_by_column="label", seed=hp.split_seed)
        except ValueError as e:  # fewer held-out rows than classes, or a class with a single row
            warnings.warn(f"validation split is not stratified ({e})", stacklevel=2)
            parts = full.train_test_split(test_size=hp.val_fraction, seed=hp.split_seed)
        size, ann = hp.image_size, hp.annotations
        self.datasets["train"] = SketchDataset(parts["train"], size, hp.augment, ann, "train", hp.erase)
        self.datasets["val"] = SketchDataset(parts["test"], size, False, ann, "val")
        test_split = hp.test_split
        if test_split is not None:
            test = self._load_split(test_split)
            test = test.add_column("row", list(range(len(test))))
            self.datasets["test"] = SketchDataset(test, size, False, ann, test_split)
        else:
            self.datasets["test"] = self.datasets["val"]
        log.info("sketches: %s", {k: len(v) for k, v in self.datasets.items()})

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        hp = self.hparams
        # Evaluation under DDP: each image on exactly one rank (Lightning's own sampler would pad with repeats).
        sampler = None if shuffle else evaluation_sampler(self.datasets[split])
        return DataLoader(
            self.datasets[split],
            batch_size=hp.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=hp.num_workers,
            collate_fn=collate_skip_corrupt,
            persistent_workers=hp.num_workers > 0,
            drop_last=shuffle and len(self.datasets[split]) > hp.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", False)
