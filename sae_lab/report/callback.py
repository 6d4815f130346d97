"""ReportCallback: the neuron report at the end of SAE training, from the SAE in memory.

Every rank streams its share of the images; the shards are merged with ``gather_latent_stats`` and rank 0
writes ``run_dir``. Add it to an SAE config::

    trainer:
      callbacks:
        - class_path: sae_lab.report.callback.ReportCallback
          init_args: {run_dir: reports/quickstart}
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L

from sae_lab.report import writer
from sae_lab.report.settings import KNOCKOUT_LATENTS, ReportSettings


class ReportCallback(L.Callback):
    """Writes the neuron report of the trained SAE when ``fit`` ends.

    Args:
        run_dir: the report folder (``reports/<run>``).
        split: train, val or test (None: test when the data has a held-out test split, else val).
        data: image source override (None: the images the FeatureTokenDataModule's classifier was trained on,
            or the datamodule's own ``data`` override).
        n_exemplars: exemplar images per latent.
        quantile: q of the on-threshold τ.
        overwrite: replace a report already in ``run_dir`` (otherwise fit refuses to start).
        batch_size: images per forward.
        knockout_latents: latents whose knockout is measured (evenly spaced ids; None: all).
        progress: show progress bars (rank 0).
    """

    def __init__(
        self,
        run_dir: str,
        split: str | None = None,
        data: str | None = None,
        n_exemplars: int = 16,
        quantile: float = 0.99,
        overwrite: bool = False,
        batch_size: int = 256,
        knockout_latents: int | None = KNOCKOUT_LATENTS,
        progress: bool = False,
    ):
        self.run_dir = Path(run_dir)
        self.settings = ReportSettings(split=split, data=data, n_exemplars=n_exemplars, quantile=quantile,
                                       batch_size=batch_size, knockout_latents=knockout_latents, overwrite=overwrite,
                                       progress=progress)  # fmt: skip
        self.report: dict[str, Any] | None = None
        """The report.json dict once written (rank 0)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Fail before training (and before the module's own setup), not after it.
        if stage == "fit" and writer.has_report(self.run_dir) and not self.settings.overwrite:
            raise FileExistsError(
                f"{self.run_dir} already holds a report ({writer.NEURONS}); set overwrite: true on ReportCallback"
            )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from sae_lab.report.pipeline import build_report

        sae, clf = getattr(pl_module, "sae", None), getattr(pl_module, "classifier", None)
        if sae is None or clf is None:
            raise ValueError("ReportCallback needs an SaeModule trained on a FeatureTokenDataModule")
        dm = trainer.datamodule
        s = self.settings
        data = s.data if s.data is not None else getattr(getattr(dm, "hparams", None), "data", None)
        settings = replace(s, data=data, progress=s.progress and trainer.is_global_zero)
        metrics = getattr(pl_module, "last_val", None)
        was_training = sae.training
        sae.eval()
        try:
            self.report = build_report(
                sae, clf, self.run_dir, settings,
                sae_metrics={k: round(float(v), 6) for k, v in metrics.items()} if metrics else None,
            )  # fmt: skip
        finally:
            sae.train(was_training)
        trainer.strategy.barrier("report")
