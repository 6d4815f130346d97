"""ClassifierModule: trains SketchResNet (AdamW, warm-up + cosine, label smoothing)."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from sae_lab.models.resnet import SketchResNet
from sae_lab.models.schedule import warmup_cosine


class ClassifierModule(L.LightningModule):
    """The sketch classifier.

    Args:
        num_classes: classes; None takes them from the datamodule at setup.
        class_names: class names, saved in the checkpoint; None takes them from the datamodule.
        stem_stride: SketchResNet stem stride.
        maxpool: SketchResNet stem max-pool.
        last_stride: SketchResNet layer4 stride.
        layer: the explained layer (the SAE's input).
        pretrained: None, "imagenet" or a local weights file (see SketchResNet).
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_fraction: share of the steps spent warming up.
        label_smoothing: cross-entropy label smoothing.
        channels_last: keep weights and inputs in channels-last memory format (faster convolutions on CPUs with
            oneDNN and on tensor-core GPUs; see benchmarks/classifier_speed.py).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        stem_stride: int = 2,
        maxpool: bool = True,
        last_stride: int = 1,
        layer: str = "layer4",
        pretrained: str | None = None,
        lr: float = 3e-3,
        weight_decay: float = 0.05,
        warmup_fraction: float = 0.05,
        label_smoothing: float = 0.1,
        channels_last: bool = False,
    ):
        super().__init__()
        if class_names is not None and num_classes is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names given for num_classes={num_classes}")
        if num_classes is None and class_names is not None:
            num_classes = len(class_names)
        self.save_hyperparameters()
        self.net: SketchResNet | None = None
        if num_classes is not None:
            self._build(num_classes)

    def _build(self, num_classes: int) -> None:
        hp = self.hparams
        self.net = SketchResNet(num_classes, hp.stem_stride, hp.maxpool, hp.last_stride, hp.layer, hp.pretrained)
        if hp.get("channels_last"):
            self.net = self.net.to(memory_format=torch.channels_last)
        self.metrics = torch.nn.ModuleDict(
            {
                f"{split}_{name}": MulticlassAccuracy(num_classes, top_k=k, average="micro")
                for split in ("train", "val", "test")
                for name, k in (("acc", 1), ("acc_top5", min(5, num_classes)))
            }
        )

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "class_names"):
            if self.net is None:
                raise ValueError("num_classes is unknown: set model.num_classes or use a SketchDataModule")
            return
        names = list(dm.class_names)
        if self.net is None:
            self.hparams.num_classes = len(names)
            self._build(len(names))
        elif self.hparams.num_classes != len(names):
            raise ValueError(
                f"the model has {self.hparams.num_classes} classes but the data has {len(names)} ({dm.source})"
            )
        if self.hparams.class_names is None:
            self.hparams.class_names = names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.get("channels_last"):
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def model_step(self, batch, split: str):
        if batch is None:  # every image of the batch was corrupt (and reported)
            return None
        logits = self(batch["image"])
        loss = F.cross_entropy(logits, batch["label"], label_smoothing=self.hparams.label_smoothing)
        bs = len(logits)
        self.log(f"{split}/loss", loss, prog_bar=split != "test", batch_size=bs, sync_dist=split != "train")
        for name in ("acc", "acc_top5"):
            metric = self.metrics[f"{split}_{name}"]
            metric(logits, batch["label"])
            self.log(f"{split}/{name}", metric, prog_bar=name == "acc", batch_size=bs)
        return loss

    def training_step(self, batch, batch_idx: int):
        return self.model_step(batch, "train")

    def validation_step(self, batch, batch_idx: int):
        self.model_step(batch, "val")

    def test_step(self, batch, batch_idx: int):
        self.model_step(batch, "test")

    def predict_step(self, batch, batch_idx: int):
        return self(batch["image"]).softmax(-1)

    def configure_optimizers(self):
        hp = self.hparams
        decay = [p for n, p in self.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in self.named_parameters() if p.ndim <= 1]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=hp.lr
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(int(hp.warmup_fraction * total), total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
