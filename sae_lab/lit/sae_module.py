"""SaeModule: trains a TopKSAE on the classifier's feature tokens and measures it by splicing."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist

from sae_lab.models.metrics import EmptySplitError, SpliceMetrics
from sae_lab.models.sae import SaeConfig, TopKSAE
from sae_lab.models.schedule import warmup_cosine
from sae_lab.models.trackers import DeadLatentTracker

DEAD_LATENTS_KEY = "dead_latents"
"""Where a checkpoint keeps the dead-latent tracker's state."""


class SaeModule(L.LightningModule):
    """Top-K SAE training: loss = FVU + auxk_coef · AuxK, on standardised tokens.

    Takes its token width, μ and σ, and the frozen classifier (for spliced validation) from the
    FeatureTokenDataModule at setup.

    Args:
        num_latents: dictionary size M.
        k: active latents per token K.
        k_aux: dead latents in the AuxK loss (None: d_in // 2).
        auxk_coef: AuxK weight (Gao et al. 2024: 1/32).
        dead_window_tokens: a latent silent for this many tokens (all ranks together) counts as dead.
        sparse_decode: sparse kernels; False trains the dense reference.
        lr: peak Adam learning rate (None: 2e-4 / sqrt(M / 16384), the Gao et al. scaling).
        warmup_fraction: share of steps spent warming up.
        resample_every: resample latents whose EMA hit rate is below `resample_threshold` every this many
            steps (0: never).
        resample_threshold: EMA hit rate (per token) under which a latent is resampled.
        export_dir: where `sae.safetensors` + `cfg.json` go at the end of fit (None: the run's folder).
    """

    def __init__(
        self,
        num_latents: int = 2048,
        k: int = 16,
        k_aux: int | None = None,
        auxk_coef: float = 1 / 32,
        dead_window_tokens: int = 200_000,
        sparse_decode: bool = True,
        lr: float | None = None,
        warmup_fraction: float = 0.02,
        resample_every: int = 0,
        resample_threshold: float = 1e-5,
        export_dir: str | None = None,
        d_in: int | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.sae: TopKSAE | None = None
        self._classifier = None  # LoadedClassifier; not a submodule, so never saved in SAE checkpoints
        # Dead-latent bookkeeping, checkpointed (on_save_checkpoint) so a resumed run keeps counting where it stopped.
        self.dead_latents = DeadLatentTracker(num_latents, dead_window_tokens)
        if d_in is not None:
            self._build(d_in)

    def _build(self, d_in: int) -> None:
        hp = self.hparams
        cfg = SaeConfig(d_in, hp.num_latents, hp.k, hp.k_aux, hp.auxk_coef, hp.dead_window_tokens, hp.sparse_decode)
        self.sae = TopKSAE(cfg)
        self.register_buffer("fmap_mean", torch.zeros(d_in))
        # One instance per split: their sums are reduced over ranks at the end of the epoch.
        self.val_metrics = SpliceMetrics(d_in, hp.num_latents)
        self.test_metrics = SpliceMetrics(d_in, hp.num_latents)

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        if dm is None or not hasattr(dm, "classifier"):
            raise ValueError("SaeModule needs a FeatureTokenDataModule (data.class_path) to provide tokens")
        self._classifier = dm.classifier
        if self.sae is None:
            self.hparams.d_in = dm.d_in
            self._build(dm.d_in)
            self.sae.to(self.device)
            self.val_metrics.to(self.device)
            self.test_metrics.to(self.device)
            fresh = True
        elif self.hparams.d_in != dm.d_in:
            raise ValueError(f"this SAE takes {self.hparams.d_in}-dim tokens but the data gives {dm.d_in}")
        else:
            fresh = stage == "fit" and self.trainer.ckpt_path is None
        self.sae.layer = dm.classifier.net.layer
        self.sae.classifier = dm.classifier.fingerprint
        self.sae.metadata = {"classifier_checkpoint": dm.classifier.path, "class_names": dm.classifier.class_names,
                             "image_size": dm.classifier.image_size, "grid": list(dm.grid)}  # fmt: skip
        if fresh:
            self.sae.set_standardization(dm.token_mean.to(self.device), dm.token_std.to(self.device))
            self.fmap_mean.copy_(dm.token_mean)
            self.sae.init_b_dec(self.sae.standardize(dm.sample_tokens().to(self.device)))
        dm.classifier.net.to(self.device)

    @property
    def classifier(self):
        return self._classifier

    # ----------------------------------------------------------------- training
    def on_fit_start(self) -> None:
        # The strategy moved the module's tensors to the device after setup; the tracker is a plain object.
        self.dead_latents.to(self.device)

    def training_step(self, batch: torch.Tensor, batch_idx: int):
        x_tilde = self.sae.standardize(batch)
        dead = self.dead_latents.compute()
        out = self.sae(x_tilde, dead_mask=dead if dead.any() else None)
        loss = out.fvu + self.hparams.auxk_coef * out.auxk_loss
        self.dead_latents.update(out.latent_acts, out.latent_indices)
        self.log_dict(
            {"train/loss": loss, "train/fvu": out.fvu, "train/auxk_loss": out.auxk_loss,
             "train/dead_frac": dead.float().mean()},
            prog_bar=True, batch_size=len(batch),
        )  # fmt: skip
        return loss

    def on_after_backward(self) -> None:
        self.sae.remove_gradient_parallel_to_decoder_directions()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.sae.set_decoder_norm_to_unit_norm()
        every = self.hparams.resample_every
        if every and (self.global_step % every == 0) and self.global_step > 0:
            usage = self.dead_latents.usage_ema
            dead = self.sae.resample_dead(self.sae.standardize(batch), usage, self.hparams.resample_threshold)
            if len(dead):
                self._reset_optimizer_rows(dead)
                self.dead_latents.reset(dead)
                if dist.is_available() and dist.is_initialized():  # every rank must hold the same weights
                    for p in (self.sae.W_enc, self.sae.W_dec, self.sae.b_enc):
                        dist.broadcast(p.data, 0)

    def _reset_optimizer_rows(self, rows: torch.Tensor) -> None:
        opt = self.optimizers().optimizer if hasattr(self.optimizers(), "optimizer") else self.optimizers()
        for p in (self.sae.W_enc, self.sae.W_dec, self.sae.b_enc):
            for v in opt.state.get(p, {}).values():
                if torch.is_tensor(v) and v.shape[:1] == p.shape[:1]:
                    v[rows] = 0

    # ----------------------------------------------------------------- validation
    def splice_step(self, batch, metrics: SpliceMetrics) -> None:
        """Adds a batch of images to a split's metrics: FVU, L0, fired latents, spliced accuracy."""
        if batch is None:  # every image of the batch was corrupt (and reported)
            return
        net = self.classifier.net
        metrics.update(self.sae, net.head, net.features(batch["image"]), batch["label"], self.fmap_mean)

    def log_split(self, split: str, metrics: SpliceMetrics) -> dict[str, float]:
        try:
            figures = metrics.compute()  # reduced over ranks: every rank logs the same figures
        except EmptySplitError as e:  # 0 / 0 would log NaN figures (and export them as the SAE's)
            raise EmptySplitError(f"{split} split: no image was measured") from e
        metrics.reset()
        self.log_dict({f"{split}/{k}": v for k, v in figures.items()}, prog_bar=False)
        return figures

    def on_validation_epoch_start(self) -> None:
        self.val_metrics.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        self.splice_step(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self.last_val = self.log_split("val", self.val_metrics)

    def on_test_epoch_start(self) -> None:
        self.test_metrics.reset()

    def test_step(self, batch, batch_idx: int) -> None:
        self.splice_step(batch, self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self.last_test = self.log_split("test", self.test_metrics)

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[DEAD_LATENTS_KEY] = self.dead_latents.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get(DEAD_LATENTS_KEY)
        # Checkpoints written before the tracker kept its counters as module buffers.
        legacy = {k: checkpoint["state_dict"].pop(k) for k in ("tokens_since_fired", "usage_ema")
                  if k in checkpoint.get("state_dict", {})}  # fmt: skip
        if state is not None or legacy:
            self.dead_latents.load_state_dict(state if state is not None else legacy)

    # ----------------------------------------------------------------- optimisation & export
    def configure_optimizers(self):
        hp = self.hparams
        lr = hp.lr or 2e-4 / (hp.num_latents / 2**14) ** 0.5
        opt = torch.optim.Adam(self.sae.parameters(), lr=lr, betas=(0.9, 0.999), eps=6.25e-10)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(int(hp.warmup_fraction * total), total, 0.1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def export_path(self) -> Path:
        if self.hparams.export_dir:
            return Path(self.hparams.export_dir)
        cb = self.trainer.checkpoint_callback
        return Path(cb.dirpath) if cb is not None and cb.dirpath else Path(self.trainer.default_root_dir)

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero:
            figures = getattr(self, "last_val", None)
            if figures:
                self.sae.metadata["val"] = {k: round(v, 6) for k, v in figures.items()}
            self.sae.save_to_disk(self.export_path())
