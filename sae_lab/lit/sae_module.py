"""SaeModule: trains a TopKSAE on the classifier's feature tokens and measures it by splicing."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F

from sae_lab.data.tokens import fmap_to_tokens, tokens_to_fmap
from sae_lab.models.sae import FvuAccumulator, SaeConfig, TopKSAE
from sae_lab.models.schedule import warmup_cosine


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
    return t


class SpliceEvaluator:
    """Accumulates validation figures over a split: FVU, L0, fired latents and spliced accuracy.

    All sums are float64 and reduced across ranks in :meth:`compute`.
    """

    def __init__(self, d_in: int, num_latents: int, device: torch.device):
        self.fvu = FvuAccumulator(d_in, device=device)
        # [tokens, Σ L0, images, correct orig, correct spliced, correct mean-ablated, Σ KL]
        self.sums = torch.zeros(7, dtype=torch.float64, device=device)
        self.fired = torch.zeros(num_latents, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, sae: TopKSAE, head, fmap: torch.Tensor, labels: torch.Tensor, fmap_mean: torch.Tensor) -> None:
        b, _, h, w = fmap.shape
        x_tilde = sae.standardize(fmap_to_tokens(fmap))
        out = sae(x_tilde)
        self.fvu.update(x_tilde, out.x_hat)
        on = out.latent_acts > 0
        self.fired.index_add_(0, out.latent_indices[on], torch.ones_like(out.latent_acts[on], dtype=torch.float64))
        logits = head(fmap)
        spliced = head(tokens_to_fmap(sae.unstandardize(out.x_hat), b, h, w))
        ablated = head(fmap_mean.view(1, -1, 1, 1).expand_as(fmap))
        kl = F.kl_div(spliced.log_softmax(-1), logits.log_softmax(-1), log_target=True, reduction="sum")
        self.sums += torch.stack(
            [
                torch.tensor(float(len(x_tilde)), device=self.sums.device),
                on.sum().double(),
                torch.tensor(float(b), device=self.sums.device),
                (logits.argmax(-1) == labels).sum().double(),
                (spliced.argmax(-1) == labels).sum().double(),
                (ablated.argmax(-1) == labels).sum().double(),
                kl.double(),
            ]
        )

    def compute(self) -> dict[str, float]:
        self.fvu.load_state(all_reduce_sum(self.fvu.state()))
        sums, fired = all_reduce_sum(self.sums), all_reduce_sum(self.fired)
        tokens, l0, images, orig, spliced, ablated, kl = sums.tolist()
        orig, spliced, ablated = orig / images, spliced / images, ablated / images
        gap = orig - ablated
        return {
            "fvu": float(self.fvu.compute()),
            "l0": l0 / tokens,
            "dead_frac": float((fired == 0).double().mean()),
            "acc_orig": orig,
            "acc_spliced": spliced,
            "acc_mean_ablated": ablated,
            "acc_recovered": (spliced - ablated) / gap if abs(gap) > 1e-12 else float("nan"),
            "kl": kl / images,
        }


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
        if d_in is not None:
            self._build(d_in)

    def _build(self, d_in: int) -> None:
        hp = self.hparams
        cfg = SaeConfig(d_in, hp.num_latents, hp.k, hp.k_aux, hp.auxk_coef, hp.dead_window_tokens, hp.sparse_decode)
        self.sae = TopKSAE(cfg)
        # Dead-latent bookkeeping, checkpointed so a resumed run keeps counting where it stopped.
        self.register_buffer("tokens_since_fired", torch.zeros(hp.num_latents, dtype=torch.long))
        self.register_buffer("usage_ema", torch.full((hp.num_latents,), 1.0 / hp.num_latents))
        self.register_buffer("fmap_mean", torch.zeros(d_in))

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
    def dead_mask(self) -> torch.Tensor:
        return self.tokens_since_fired >= self.hparams.dead_window_tokens

    def training_step(self, batch: torch.Tensor, batch_idx: int):
        x_tilde = self.sae.standardize(batch)
        dead = self.dead_mask()
        out = self.sae(x_tilde, dead_mask=dead if dead.any() else None)
        loss = out.fvu + self.hparams.auxk_coef * out.auxk_loss
        self._track_usage(out.latent_acts, out.latent_indices, len(batch))
        self.log_dict(
            {"train/loss": loss, "train/fvu": out.fvu, "train/auxk_loss": out.auxk_loss,
             "train/dead_frac": dead.float().mean()},
            prog_bar=True, batch_size=len(batch),
        )  # fmt: skip
        return loss

    @torch.no_grad()
    def _track_usage(self, acts: torch.Tensor, indices: torch.Tensor, n_tokens: int) -> None:
        hits = torch.zeros(self.hparams.num_latents, device=acts.device)
        hits.index_add_(0, indices[acts > 0], torch.ones_like(acts[acts > 0]))
        counts = all_reduce_sum(torch.cat([hits, hits.new_tensor([n_tokens])]))
        hits, total = counts[:-1], counts[-1]
        self.tokens_since_fired += int(total)
        self.tokens_since_fired[hits > 0] = 0
        self.usage_ema.mul_(0.99).add_(0.01 * hits / total)

    def on_after_backward(self) -> None:
        self.sae.remove_gradient_parallel_to_decoder_directions()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.sae.set_decoder_norm_to_unit_norm()
        every = self.hparams.resample_every
        if every and (self.global_step % every == 0) and self.global_step > 0:
            dead = self.sae.resample_dead(self.sae.standardize(batch), self.usage_ema, self.hparams.resample_threshold)
            if len(dead):
                self._reset_optimizer_rows(dead)
                self.usage_ema[dead] = 1.0 / self.hparams.num_latents
                self.tokens_since_fired[dead] = 0
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
    def on_validation_epoch_start(self) -> None:
        self.evaluator = SpliceEvaluator(self.hparams.d_in, self.hparams.num_latents, self.device)

    def validation_step(self, batch, batch_idx: int) -> None:
        if batch is None:
            return
        net = self.classifier.net
        self.evaluator.update(self.sae, net.head, net.features(batch["image"]), batch["label"], self.fmap_mean)

    def on_validation_epoch_end(self) -> None:
        figures = self.evaluator.compute()
        self.log_dict({f"val/{k}": v for k, v in figures.items()}, prog_bar=False)
        self.last_val = figures

    def test_step(self, batch, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    on_test_epoch_start = on_validation_epoch_start

    def on_test_epoch_end(self) -> None:
        figures = self.evaluator.compute()
        self.log_dict({f"test/{k}": v for k, v in figures.items()})
        self.last_test = figures

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
