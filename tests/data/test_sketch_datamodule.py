import io
import json
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from sae_lab.data.export import decode_masks, encode_masks, pool_mask_bits, pool_masks_any
from sae_lab.data.images import collate_skip_corrupt, image_to_tensor
from sae_lab.data.sketch import DataSourceError, SketchDataModule
from sae_lab.data.sketch_dataset import erase_rectangle
from sae_lab.data.world import CLASSES, SketchWorld
from tests.helpers.common import IMAGE_SIZE, N_TEST, N_TRAIN


def make_dm(path, **kw) -> SketchDataModule:
    kw = {"image_size": IMAGE_SIZE, "batch_size": 16, "num_workers": 0, "augment": False, "val_fraction": 0.25, **kw}
    dm = SketchDataModule(str(path), **kw)
    dm.setup("fit")
    return dm


def write_parquet(path, images, labels, names=("a", "b")):
    """A TU-Berlin-like parquet written without `datasets`, as another tool would write it."""
    path.mkdir(parents=True, exist_ok=True)
    table = pa.table({"image": [{"bytes": b, "path": None} for b in images], "label": labels})
    meta = {"info": {"features": {"image": {"_type": "Image"}, "label": {"names": list(names), "_type": "ClassLabel"}}}}
    table = table.replace_schema_metadata({"huggingface": json.dumps(meta)})
    pq.write_table(table, path / "train-00000-of-00001.parquet")
    return path


def png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_world_parquet_round_trip_gives_the_same_images_labels_and_masks(world_dir):
    dm = make_dm(world_dir, test_split="test", annotations=True)
    assert dm.class_names == list(CLASSES) and dm.num_classes == len(CLASSES)
    world = SketchWorld(image_size=IMAGE_SIZE, seed=0)
    for split, name in (("train", "train"), ("val", "train"), ("test", "test")):
        ds = dm.datasets[split]
        for i in range(0, len(ds), max(1, len(ds) // 5)):
            item = ds[i]
            sample = world.sample(item["index"], name)
            assert item["label"] == sample.label
            assert torch.equal(item["image"], image_to_tensor(sample.image, IMAGE_SIZE))
            assert torch.equal(item["masks"], torch.from_numpy(sample.masks))
            assert torch.equal(item["primitives"], torch.from_numpy(sample.primitives).float())
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == N_TRAIN
    assert len(dm.datasets["test"]) == N_TEST


def test_validation_split_is_stratified_disjoint_and_fixed_by_seed(world_dir):
    a, b = make_dm(world_dir), make_dm(world_dir)
    c = make_dm(world_dir, split_seed=1)
    rows = lambda dm, s: {dm.datasets[s][i]["index"] for i in range(len(dm.datasets[s]))}  # noqa: E731
    assert rows(a, "val") == rows(b, "val") != rows(c, "val")
    assert not rows(a, "val") & rows(a, "train")
    labels = [a.datasets["val"][i]["label"] for i in range(len(a.datasets["val"]))]
    counts = np.bincount(labels, minlength=a.num_classes)
    assert counts.max() - counts.min() <= 1  # stratified: every class held out alike


def test_batches_have_the_classifier_layout(world_dir):
    dm = make_dm(world_dir, augment=True)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (16, 1, IMAGE_SIZE, IMAGE_SIZE) and batch["image"].dtype == torch.float32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["label"].dtype == torch.int64


def test_augmentation_changes_training_images_but_not_validation(world_dir):
    dm = make_dm(world_dir, augment=True)
    torch.manual_seed(0)
    train = [dm.datasets["train"][0]["image"] for _ in range(4)]
    assert any(not torch.equal(train[0], t) for t in train[1:])
    assert torch.equal(dm.datasets["val"][0]["image"], dm.datasets["val"][0]["image"])


def test_cutout_blanks_one_rectangle_of_the_asked_share():
    torch.manual_seed(0)
    x = torch.ones(1, 40, 40)
    for _ in range(20):
        erased = erase_rectangle(x, area=(0.2, 0.3))
        blank = erased[0] == 0
        rows, cols = blank.any(1).nonzero().flatten(), blank.any(0).nonzero().flatten()
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert blank.sum() == box  # one solid rectangle
        assert 0.15 * 1600 <= box <= 0.35 * 1600
    assert x.min() == 1  # the input is not modified


def test_erase_applies_to_training_images_only(world_dir):
    dm = make_dm(world_dir, augment=True, erase=1.0)
    assert dm.datasets["train"].erase == 1.0 and dm.datasets["val"].augment is False
    with pytest.raises(ValueError, match="erase"):
        make_dm(world_dir, erase=1.5)


def test_masks_encode_and_decode_exactly():
    masks = np.random.default_rng(0).random((12, 20, 20)) > 0.7
    assert np.array_equal(decode_masks(encode_masks(masks), 12), masks)


@pytest.mark.parametrize("size,grid", [(32, (4, 4)), (30, (4, 4)), (64, (7, 5))])
def test_pooling_the_bitmask_equals_pooling_every_mask(size, grid):
    masks = np.random.default_rng(size).random((12, size, size)) > 0.97
    bits = np.zeros((size, size), np.uint16)
    for p in range(12):
        bits |= masks[p].astype(np.uint16) << p
    pooled = pool_mask_bits(bits, grid)
    want = pool_masks_any(masks, grid)  # (h·w, P)
    got = (pooled.reshape(-1)[:, None] >> np.arange(12)) & 1
    assert pooled.shape == grid and np.array_equal(got.astype(bool), want)


def test_token_masks_from_the_dataset_equal_pooled_pixel_masks(world_dir):
    ds = make_dm(world_dir, test_split="test", annotations=True).datasets["test"]
    for i in range(0, len(ds), 7):
        full, pooled = ds[i], ds.get(i, mask_grid=(4, 4))
        assert "masks" not in pooled and torch.equal(pooled["image"], full["image"])
        assert torch.equal(pooled["token_masks"], torch.from_numpy(pool_masks_any(full["masks"].numpy(), (4, 4))))
        assert pooled["token_masks"].any(0).tolist() == full["primitives"].bool().tolist()


def test_missing_data_path_names_it(tmp_path):
    with pytest.raises(DataSourceError, match="does not exist"):
        SketchDataModule(str(tmp_path / "nowhere" / "sketches"))


def test_folder_without_parquet_is_refused(tmp_path):
    with pytest.raises(DataSourceError, match="no .parquet"):
        SketchDataModule(str(tmp_path))


def test_parquet_without_label_column_names_the_missing_column(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    pq.write_table(pa.table({"image": [{"bytes": b"x", "path": None}], "caption": ["x"]}), tmp_path / "t.parquet")
    with pytest.raises(DataSourceError, match=r"\['label'\]"):
        SketchDataModule(str(tmp_path))


def test_plain_parquet_from_another_tool_loads_with_its_class_names(tmp_path):
    world = SketchWorld(image_size=IMAGE_SIZE)
    images = [png(world.sample(i).image) for i in range(20)]
    folder = write_parquet(tmp_path / "plain", images, [i % 2 for i in range(20)], names=("cat", "dog"))
    dm = make_dm(folder)
    assert dm.class_names == ["cat", "dog"]
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 20


def test_corrupt_png_rows_are_skipped_with_a_warning_naming_the_row(tmp_path):
    world = SketchWorld(image_size=IMAGE_SIZE)
    images = [png(world.sample(i).image) for i in range(20)]
    images[7] = images[7][: len(images[7]) // 2]  # truncated PNG
    images[11] = b"definitely not a png"
    folder = write_parquet(tmp_path / "bad", images, [i % 2 for i in range(20)])
    dm = make_dm(folder, val_fraction=0.5)
    seen, messages = [], []
    for split in ("train", "val"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for batch in dm._loader(split, shuffle=False):
                seen += batch["index"].tolist()
        messages += [str(w.message) for w in caught if "corrupt" in str(w.message)]
    assert sorted(seen) == [i for i in range(20) if i not in (7, 11)]
    assert any("row 7 " in m for m in messages) and any("row 11 " in m for m in messages)


def test_a_batch_of_only_corrupt_rows_collates_to_none():
    assert collate_skip_corrupt([None, None]) is None


def test_rgba_and_16_bit_images_become_one_channel_ink():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:12, :, 3] = 255  # black line on transparent paper
    ink = image_to_tensor(Image.fromarray(rgba, "RGBA"), 20)
    assert ink.shape == (1, 20, 20) and ink[0, 5].max() > 0.5 and ink[0, 15].max() == 0
    deep = np.full((40, 40), 65535, np.uint16)
    deep[:, 20:22] = 0
    ink16 = image_to_tensor(Image.fromarray(deep), 40)
    assert ink16[0, :, 20].min() == 1.0 and ink16[0, :, 5].max() == 0.0


def test_the_world_cache_is_keyed_by_its_settings_and_class_table(tmp_path, monkeypatch):
    import sae_lab.data.sketch as sketch

    kw = {"cache_dir": str(tmp_path), "world_train": 40, "world_test": 10}
    base = SketchDataModule("world", **kw).source
    assert SketchDataModule("world", **kw).source == base
    assert SketchDataModule("world", **{**kw, "world_seed": 1}).source != base
    monkeypatch.setattr(sketch, "CLASSES", {**CLASSES, "kite": ("triangle", "wave")})
    assert SketchDataModule("world", **kw).source != base  # an older table's export is never reused
