"""Issue 19, item 11: SAE validation counts every image once under DDP, and an empty split is a clear error.

The reproduction: a validation split whose size is not a multiple of the world size (9 images on 2 ranks).
Lightning's ``DistributedSampler`` pads it by repeating image 0, which then counted twice in FVU, the accuracies and
KL; and a split in which nothing could be measured divided 0 by 0.
"""

from __future__ import annotations

import json
import os
import socket

import lightning as L
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler, Subset

from sae_lab.data.samplers import UnpaddedDistributedSampler
from sae_lab.data.token_datamodule import FeatureTokenDataModule
from sae_lab.lit.sae_module import SaeModule
from sae_lab.models.metrics import EmptySplitError, SpliceMetrics
from sae_lab.models.sae import TopKSAE
from tests.helpers.threads import one_thread  # noqa: F401

NUM_LATENTS = 32
K = 4
N_VAL = 9  # odd: rank 0 reads 5 images (3 batches), rank 1 reads 4 (2 batches)
BATCH = 2
KEYS = ("fvu", "l0", "dead_frac", "acc_orig", "acc_spliced", "acc_mean_ablated", "kl")


class OddValidation(FeatureTokenDataModule):
    """The classifier's own validation images, cut to ``N_VAL`` (or made unreadable with ``corrupt``)."""

    def __init__(self, *args, corrupt: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.corrupt = corrupt

    def setup(self, stage=None):
        super().setup(stage)
        val = self.images.datasets["val"]
        self.images.datasets["val"] = Unreadable(N_VAL) if self.corrupt else Subset(val, range(N_VAL))


class Unreadable(torch.utils.data.Dataset):
    """Every row corrupt (the loader's collate drops them, as it drops undecodable images)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return None


def datamodule(ckpt, **kw) -> OddValidation:
    return OddValidation(str(ckpt), source="live", stats_images=2, image_batch_size=BATCH, **kw)


def sae_module(d_in: int) -> SaeModule:
    torch.manual_seed(0)
    module = SaeModule(num_latents=NUM_LATENTS, k=K, d_in=d_in)
    with torch.no_grad():
        module.sae.b_enc.normal_(0, 0.5)
        module.fmap_mean.normal_(0, 0.1)
    return module


def trainer(**kw) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **kw)  # fmt: skip


def figures_over(sae: TopKSAE, module: SaeModule, dm, rows: list[int]) -> dict[str, float]:
    """One process, every listed validation row in one batch: the figures of exactly these images."""
    ds, net = dm.images.datasets["val"], dm.classifier.net
    items = [ds[i] for i in rows]
    metrics = SpliceMetrics(sae.cfg.d_in, NUM_LATENTS)
    images, labels = torch.stack([x["image"] for x in items]), torch.tensor([int(x["label"]) for x in items])
    with torch.no_grad():
        metrics.update(sae, net.head, net.features(images), labels, module.fmap_mean)
    return metrics.compute()


class SeenRows(L.Callback):
    """The dataset rows each validation batch held, in order."""

    def __init__(self):
        self.rows: list[int] = []
        self.batches = 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.rows += batch["index"].tolist()
        self.batches += 1


def _rank(rank: int, ckpt: str, port: int, module: SaeModule, out: str) -> None:
    torch.set_num_threads(1)
    # As torchrun would start them: Lightning joins this process group instead of launching its own processes.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", NODE_RANK="0",
                      LOCAL_RANK=str(rank), RANK=str(rank))  # fmt: skip
    seen = SeenRows()
    trainer(devices=2, strategy="ddp", callbacks=[seen], num_sanity_val_steps=0).validate(
        module, datamodule=datamodule(ckpt), verbose=False)  # fmt: skip
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"figures": module.last_val, "batches": seen.batches, "rows": seen.rows}, f)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_evaluation_sampler_reads_every_index_once_where_lightnings_repeats_one():
    ours = [list(UnpaddedDistributedSampler(range(N_VAL), num_replicas=2, rank=r)) for r in (0, 1)]
    assert sorted(ours[0] + ours[1]) == list(range(N_VAL)) and [len(x) for x in ours] == [5, 4]
    padded = [list(DistributedSampler(range(N_VAL), num_replicas=2, rank=r, shuffle=False)) for r in (0, 1)]
    assert len(padded[0] + padded[1]) == N_VAL + 1  # the old behaviour: image 0 twice
    with pytest.raises(ValueError, match="1 item.*2 processes"):
        UnpaddedDistributedSampler(range(1), num_replicas=2, rank=0)


def test_two_ddp_ranks_validate_an_odd_split_exactly_as_one_process(classifier_ckpt, tmp_path):
    dm = datamodule(classifier_ckpt)
    dm.setup("validate")
    module = sae_module(dm.d_in)
    out = str(tmp_path / "rank")
    # fork: the children share the parent's SAE and skip re-importing torch and Lightning.
    mp.start_processes(_rank, args=(str(classifier_ckpt), free_port(), module, out), nprocs=2, join=True,
                       start_method="fork")  # fmt: skip
    ranks = [json.loads(open(f"{out}.{r}").read()) for r in (0, 1)]
    rows = sorted(int(dm.images.datasets["val"][i]["index"]) for i in range(N_VAL))
    assert sorted(ranks[0]["rows"] + ranks[1]["rows"]) == rows  # each image on exactly one rank
    assert [r["batches"] for r in ranks] == [3, 2]  # uneven batch counts, and no hang
    assert ranks[0]["figures"] == ranks[1]["figures"]
    single = figures_over(module.sae, module, dm, list(range(N_VAL)))
    got = ranks[0]["figures"]
    # float64 sums of float32 features computed in other batch shapes: equal to ~1e-7 relative.
    for key in KEYS:
        assert got[key] == pytest.approx(single[key], rel=1e-5, abs=1e-7), key
    # Lightning's padded sampler counted image 0 twice: figures a test at this tolerance tells apart.
    padded = figures_over(module.sae, module, dm, [*range(N_VAL), 0])
    assert any(padded[k] != pytest.approx(single[k], rel=1e-5, abs=1e-7) for k in ("fvu", "kl"))


def test_an_empty_split_is_a_clear_error_not_nan(classifier_ckpt):
    with pytest.raises(EmptySplitError, match="no image was measured.*undefined"):
        SpliceMetrics(8, NUM_LATENTS).compute()
    dm = datamodule(classifier_ckpt, corrupt=True)
    dm.setup("validate")
    module = sae_module(dm.d_in)
    with pytest.raises(EmptySplitError, match=r"^val split: no image was measured \(the split is empty"):
        trainer(devices=1).validate(module, datamodule=dm, verbose=False)
    assert not hasattr(module, "last_val")  # no NaN figures were logged or kept
