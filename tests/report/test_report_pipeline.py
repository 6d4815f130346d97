"""The neuron report: a complete report on the tiny fixtures, a planted latent end to end, bad inputs, overwrite
protection, atomicity, rank shards, and the report at the end of SAE training."""

import functools
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sae_lab.data.export import pool_masks_any
from sae_lab.jsonable import to_jsonable
from sae_lab.models.classifier_io import load_classifier
from sae_lab.models.sae import SaeConfig, TopKSAE
from sae_lab.report import ReportSettings, html, images, pipeline, run_report, stream, writer
from sae_lab.run.io import read_jsonl
from sae_lab.stats import pool_masks
from tests.helpers.common import IMAGE_SIZE

NUM_LATENTS = 32
K = 4
NEURON_KEYS = {"latent", "schema", "frequency", "image_frequency", "dense_frequency", "dense_image_frequency", "mean_act", "tau",
               "n_on", "mean_on_zavg", "dead", "top_classes", "anti_classes", "monosemanticity", "exemplars", "sprite",
               "ground_truth", "stats_block"}  # fmt: skip
CLASS_KEYS = {"class", "index", "S", "pmi", "delta", "delta_measured", "w", "n_on"}
SUMMARY_KEYS = {"primitives_recovered", "primitives_total", "latents_matched", "seconds", "knockout_corr"}


@functools.lru_cache
def _classifier(path: Path):
    return load_classifier(path)


def make_sae(classifier_ckpt: Path, out: Path, d_in: int = 512, classifier: str | None = None) -> Path:
    """A random TopKSAE standardised on the classifier's real tokens (so that its latents fire), exported."""
    clf = _classifier(classifier_ckpt)
    torch.manual_seed(0)
    sae = TopKSAE(SaeConfig(d_in=d_in, num_latents=NUM_LATENTS, k=K), layer="layer4",
                  classifier=clf.fingerprint if classifier is None else classifier,
                  metadata={"classifier_checkpoint": str(classifier_ckpt), "class_names": clf.class_names,
                            "image_size": IMAGE_SIZE, "grid": [2, 2], "val": {"fvu": 0.5, "l0": float(K)}})  # fmt: skip
    if d_in == clf.net.channels:
        with torch.no_grad():
            tokens = clf.net.features(torch.rand(8, 1, IMAGE_SIZE, IMAGE_SIZE).round()).permute(0, 2, 3, 1)
            tokens = tokens.reshape(-1, d_in)
        sae.set_standardization(tokens.mean(0), tokens.std(0))
        sae.init_b_dec(sae.standardize(tokens))
    sae.save_to_disk(out)
    return out


@pytest.fixture(scope="module")
def tiny(classifier_ckpt, tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    sae_dir = make_sae(classifier_ckpt, root / "sae")
    run_dir = root / "reports" / "tiny"
    block = run_report(sae_dir, run_dir, progress=False)
    return SimpleNamespace(root=root, sae_dir=sae_dir, run_dir=run_dir, block=block)


def read_report(run_dir: Path):
    return read_jsonl(run_dir / "neurons.jsonl"), json.loads((run_dir / "report.json").read_text())


def test_report_is_complete_and_its_figures_consistent(tiny):
    neurons, report = read_report(tiny.run_dir)
    assert [n["latent"] for n in neurons] == list(range(NUM_LATENTS))
    assert not list(tiny.run_dir.parent.glob(".tiny.tmp-*")), "the staging folder was left behind"
    for n in neurons:
        assert NEURON_KEYS <= set(n), NEURON_KEYS - set(n)
        assert len(n["top_classes"]) == len(n["anti_classes"]) == writer.NUM_LISTED
        assert all(CLASS_KEYS <= set(c) for c in n["top_classes"] + n["anti_classes"])
        assert n["stats_block"]["latent"] == n["latent"] and n["stats_block"]["frequency"] == n["frequency"]
        assert n["dead"] == (n["frequency"] == 0)
        if n["dead"]:
            assert n["sprite"] is None and all(e["image"] is None for e in n["exemplars"])
            continue
        assert n["exemplars"] and (tiny.run_dir / n["sprite"]).is_file()
        z = [e["z_max"] for e in n["exemplars"]]
        assert z == sorted(z, reverse=True) and len(z) <= 16
        for e in n["exemplars"]:
            with Image.open(tiny.run_dir / e["image"]) as img:
                assert img.size == (images.TILE, images.TILE)
        gt = n["ground_truth"]
        assert gt is not None and len(gt["all"]) == 12 and gt["primitive"] in gt["all"]
    live = [n for n in neurons if not n["dead"]]
    assert live, "no live latent: the fixture SAE is broken"
    assert report["num_images"] == 36 and report["data"]["split"] == "test" and report["num_latents"] == NUM_LATENTS
    assert report["live_latents"] == len(live)
    assert report["dead_latents"] == [n["latent"] for n in neurons if n["dead"]]
    assert report["primitives_total"] == 12 == len(report["primitives"])
    assert report["primitives_recovered"] == sum(p["recovered"] for p in report["primitives"])
    matched = sum(n["ground_truth"]["image_auc"] >= 0.9 for n in live)
    assert report["latents_matched"] == matched
    assert sum(report["frequency_histogram"]["counts"]) == len(live)
    evaluated = sum(c["delta_measured"] is not None for n in neurons for c in n["top_classes"] + n["anti_classes"])
    assert report["knockout"]["pairs"] == evaluated > 0
    assert report["sae"]["metrics"] == {"fvu": 0.5, "l0": 4.0}
    assert set(tiny.block) == SUMMARY_KEYS
    for key in SUMMARY_KEYS - {"seconds"}:
        assert tiny.block[key] == report[key]
    page = (tiny.run_dir / "index.html").read_text()
    assert "Neuron report" in page and '{"latents":[{"latent":0,' in page


# ------------------------------------------------------------------------------------------------ planted
class CornerNet(torch.nn.Module):
    """A stand-in classifier: 2×2 tokens of 4 channels from quadrant ink; class 1 = "ink in a corner"."""

    layer, channels = "layer4", 4

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[-1.0, 0, 0, 0], [1.0, 0, 0, 0]]))
            self.fc.bias.zero_()

    def features(self, x):
        q = F.avg_pool2d(x, x.shape[-1] // 2)
        return torch.cat([q, 0.5 * q, q.square(), torch.full_like(q, 0.1)], 1)

    def head(self, fmap):
        return self.fc(fmap.mean((2, 3)))

    classifier = property(lambda self: self.fc)  # SketchResNet's accessor of the final linear layer


def corner_world(n: int = 48, seed: int = 0) -> list[dict]:
    """Images with faint noise everywhere; half have a block in the top-left quadrant (primitive 0, class 1),
    some a faint patch bottom-right (primitive 1)."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        img = (torch.rand(1, 32, 32, generator=g) < 0.03).float()
        masks = torch.zeros(2, 32, 32, dtype=torch.bool)
        corner, patch = i % 2 == 1, bool(torch.rand((), generator=g) < 0.5)
        if corner:
            img[0, 3:13, 3:13] = 1.0
            masks[0, 3:13, 3:13] = True
        if patch:
            img[0, 20:24, 20:24] = 1.0
            masks[1, 20:24, 20:24] = True
        items.append({"image": img, "label": int(corner), "index": 100 + i,
                      "primitives": masks.flatten(1).any(1).float(), "masks": masks})  # fmt: skip
    return items


def corner_sae() -> TopKSAE:
    """Latent 0 fires on a token with quadrant ink > 0.3 (only the corner block); the others rarely fire."""
    torch.manual_seed(1)
    sae = TopKSAE(SaeConfig(d_in=4, num_latents=6, k=2), layer="layer4", classifier="corner")
    with torch.no_grad():
        sae.W_enc[0] = torch.tensor([1.0, 0, 0, 0])
        sae.W_dec[0] = torch.tensor([1.0, 0, 0, 0])
        sae.b_enc.fill_(-0.6)
        sae.b_enc[0] = -0.3
    return sae.eval().requires_grad_(False)


@pytest.fixture
def corner_inputs(monkeypatch):
    items = corner_world()
    dm = SimpleNamespace(source="corner-world", hparams=SimpleNamespace(image_size=32))
    monkeypatch.setattr(pipeline, "open_split", lambda *a, **k: (dm, items, "test", ["corner", "patch"]))
    clf = SimpleNamespace(net=CornerNet(), class_names=["plain", "cornered"], fingerprint="corner", path="corner.ckpt")
    return corner_sae(), clf, items


def test_a_planted_latent_is_found_end_to_end(corner_inputs, tmp_path, monkeypatch):
    sae, clf, items = corner_inputs
    monkeypatch.setattr(stream, "_ROWS_IN_RAM", 0)  # per-image rows memory-mapped in the staging folder
    report = pipeline.build_report(sae, clf, tmp_path / "run", ReportSettings(n_exemplars=8, progress=False))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "exemplars", "index.html", "neurons.jsonl", "report.json", "sprites"
    ]  # fmt: skip
    neurons, on_disk = read_report(tmp_path / "run")
    assert on_disk == json.loads(json.dumps(to_jsonable(report, 6, strict=False)))
    planted = neurons[0]
    assert planted["ground_truth"]["primitive"] == "corner"
    assert planted["ground_truth"]["image_auc"] == 1.0 and planted["ground_truth"]["token_auc"] == 1.0
    assert planted["image_frequency"] == 0.5 and planted["frequency"] == 0.5 / 4  # one token of half the images
    assert planted["top_classes"][0]["class"] == "cornered" and planted["top_classes"][0]["delta"] < 0
    assert planted["monosemanticity"] == 1.0
    assert {e["id"] for e in planted["exemplars"]} <= {100 + i for i in range(1, 48, 2)}  # source rows, corners
    corner = report["primitives"][0]
    assert corner == {**corner, "primitive": "corner", "latent": 0, "recovered": True}
    assert report["latents_matched"] >= 1
    measured = planted["top_classes"][0]["delta_measured"]
    assert measured == pytest.approx(planted["top_classes"][0]["delta"], rel=1e-4)  # linear head, latent in Top-K
    assert report["knockout"]["corr"] > 0.99


def test_without_ground_truth_the_report_has_none(corner_inputs, tmp_path, monkeypatch):
    sae, clf, items = corner_inputs
    plain_items = [{k: v for k, v in it.items() if k not in ("masks", "primitives")} for it in items]
    dm = SimpleNamespace(source="tu-berlin-like", hparams=SimpleNamespace(image_size=32))
    monkeypatch.setattr(pipeline, "open_split", lambda *a, **k: (dm, plain_items, "val", None))
    report = pipeline.build_report(
        sae, clf, tmp_path / "run", ReportSettings(n_exemplars=4, knockout_latents=0, progress=False)
    )
    neurons = read_jsonl(tmp_path / "run" / "neurons.jsonl")
    assert all(n["ground_truth"] is None and n["stats_block"]["ground_truth"] is None for n in neurons)
    assert report["primitives_total"] is None and report["primitives"] is None and report["latents_matched"] is None
    assert report["knockout"] == {"corr": None, "corr_dataset": None, "pairs": 0, "latents": 0}
    assert all(c["delta_measured"] is None for n in neurons for c in n["top_classes"])
    assert 'id="primitives"' not in (tmp_path / "run" / "index.html").read_text()


def test_under_torch_distributed_the_gathered_pass_equals_the_plain_one(tmp_path):
    """The rank-merging path (gather_latent_stats, counters, rows, feature maps), in a one-process gloo group.
    Two real ranks: see test_sae_module's DDP run; merging shards exactly is tested in tests/stats."""
    import torch.distributed as dist

    args = (CornerNet(), corner_sae(), corner_world(), 2, 2, 4, 0.9, 16, torch.arange(6))
    plain = stream.stream_statistics(*args, progress=False)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        gathered = stream.stream_statistics(*args, progress=False)
    finally:
        dist.destroy_process_group()
    got, want = vars(gathered.stats.compute()), vars(plain.stats.compute())
    for key, value in want.items():
        if isinstance(value, torch.Tensor):
            assert torch.allclose(got[key].double(), value.double(), equal_nan=True), key
    assert torch.equal(gathered.topk_token_fire, plain.topk_token_fire)
    assert torch.equal(gathered.rows, plain.rows) and sorted(gathered.fmaps) == sorted(plain.fmaps)


@pytest.mark.parametrize("size,grid", [(32, (2, 2)), (30, (4, 4)), (64, (7, 5))])
def test_per_image_mask_pooling_matches_the_batched_one(size, grid):
    masks = torch.rand(3, 5, size, size) < 0.05
    mine = torch.stack([torch.from_numpy(pool_masks_any(m.numpy(), grid)) for m in masks])
    assert torch.equal(mine, pool_masks(masks, grid))


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "field,value,message",
    [("split", "holdout", "split must be one of train, val, test"), ("quantile", -0.1, "quantile must be in"),
     ("batch_size", 0, "must be >= 1"), ("num_workers", -1, "num_workers must be >= 0"),
     ("knockout_latents", -5, "knockout_latents must be >= 0")],
)  # fmt: skip
def test_report_settings_name_what_is_wrong(field, value, message):
    with pytest.raises(ValueError, match=message):
        ReportSettings(**{field: value})


def test_report_callback_checks_its_settings_when_configured():
    from sae_lab.report.callback import ReportCallback

    with pytest.raises(ValueError, match="quantile must be in"):
        ReportCallback(run_dir="reports/x", quantile=2.0)


def test_an_existing_report_is_kept_unless_overwrite_and_other_files_survive(tiny, tmp_path):
    run_dir = tmp_path / "reports" / "again"
    shutil.copytree(tiny.run_dir, run_dir)
    (run_dir / "summary.json").write_text('{"classifier": {}}')
    (run_dir / "labels.jsonl").write_text('{"latent": 0, "label": "zebra stripes", "evidence": "e", "source": "llm"}\n')
    with pytest.raises(FileExistsError, match="already holds a report"):
        run_report(tiny.sae_dir, run_dir, progress=False)
    run_report(tiny.sae_dir, run_dir, overwrite=True, progress=False)
    assert (run_dir / "summary.json").read_text() == '{"classifier": {}}'
    assert "zebra stripes" in (run_dir / "index.html").read_text()  # the page shows labels already there
    assert len(read_jsonl(run_dir / "neurons.jsonl")) == NUM_LATENTS


def test_sae_and_classifier_that_do_not_belong_together(classifier_ckpt, tmp_path):
    stranger = make_sae(classifier_ckpt, tmp_path / "stranger", classifier="0123456789abcdef")
    with pytest.raises(ValueError, match="do not belong together"):
        run_report(stranger, tmp_path / "r1", progress=False)
    narrow = make_sae(classifier_ckpt, tmp_path / "narrow", d_in=256, classifier="")
    with pytest.raises(ValueError, match="256-dim tokens"):
        run_report(narrow, tmp_path / "r2", progress=False)
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_missing_sae_or_classifier(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_report(tmp_path / "nowhere", tmp_path / "r", progress=False)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "cfg.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="lacks sae.safetensors"):
        run_report(tmp_path / "half", tmp_path / "r", progress=False)
    with pytest.raises(FileNotFoundError, match="classifier checkpoint"):
        run_report(tiny.sae_dir, tmp_path / "r", classifier=tmp_path / "none.ckpt", progress=False)


def test_an_empty_split_is_an_error(tiny, world_dir, tmp_path):
    data = tmp_path / "empty_test"
    (data / "data").mkdir(parents=True)
    for f in (world_dir / "data").glob("*.parquet"):
        table = pq.read_table(f)
        pq.write_table(table.slice(0, 0) if f.name.startswith("test") else table, data / "data" / f.name)
    with pytest.raises(ValueError, match="is a split empty"):
        run_report(tiny.sae_dir, tmp_path / "r", data=str(data), progress=False)
    assert not (tmp_path / "r").exists()


def test_a_crash_while_writing_leaves_no_report(tiny, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pipeline, "write_jsonl", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_report(tiny.sae_dir, tmp_path / "fresh", progress=False)
    assert not (tmp_path / "fresh").exists()
    assert not list(tmp_path.glob(".*.tmp-*")), "the staging folder was left behind"


def test_a_crash_while_overwriting_keeps_the_old_report(tiny, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    old = tmp_path / "old"
    shutil.copytree(tiny.run_dir, old)
    before = {p.name: p.read_bytes() for p in old.iterdir() if p.is_file()}
    monkeypatch.setattr(html, "write_index", boom)  # the last file written before the report moves into place
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_report(tiny.sae_dir, old, overwrite=True, progress=False)
    assert {p.name: p.read_bytes() for p in old.iterdir() if p.is_file()} == before
    assert not list(tmp_path.glob(".*.tmp-*")), "the staging folder was left behind"


# ------------------------------------------------------------------------------------------------ callback
def test_report_callback_writes_the_report_when_sae_training_ends(classifier_ckpt, tmp_path):
    from sae_lab.data.token_datamodule import FeatureTokenDataModule
    from sae_lab.lit.sae_module import SaeModule
    from sae_lab.report.callback import ReportCallback

    L.seed_everything(0, verbose=False)
    run_dir = tmp_path / "reports" / "fit"
    callback = ReportCallback(run_dir=str(run_dir), n_exemplars=4)
    dm = FeatureTokenDataModule(str(classifier_ckpt), batch_size=128, image_batch_size=36)
    module = SaeModule(num_latents=NUM_LATENTS, k=K, lr=3e-3, export_dir=str(tmp_path / "export"))
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1,
                        callbacks=[callback])  # fmt: skip
    trainer.fit(module, datamodule=dm)
    neurons, report = read_report(run_dir)
    assert len(neurons) == NUM_LATENTS and callback.report["num_latents"] == NUM_LATENTS
    assert report["sae"]["metrics"]["l0"] <= K and report["classifier"]["fingerprint"] == dm.classifier.fingerprint
    with pytest.raises(FileExistsError):  # refuses before training, not after
        L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, callbacks=[ReportCallback(run_dir=str(run_dir))]).fit(
            SaeModule(num_latents=NUM_LATENTS, k=K), datamodule=dm
        )  # fmt: skip
