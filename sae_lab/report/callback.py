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

from sae_lab.report.settings import ReportSettings
from sae_lab.run.files import RunFiles


class ReportCallback(L.Callback):
    """Writes the neuron report of the trained SAE when ``fit`` ends.

    Args:
        run_dir: the report folder (``reports/<run>``).
        **settings: any other field of :class:`~sae_lab.report.settings.ReportSettings` (split, data, n_exemplars,
            quantile, batch_size, knockout_latents, overwrite, progress, …); LightningCLI lists them with their
            help. ``overwrite`` false: fit refuses to start when ``run_dir`` already holds a report.
    """

    def __init__(self, run_dir: str, **settings):
        self.run_dir = Path(run_dir)
        # sae, classifier and device are the SAE being trained, its classifier and its device.
        self.settings = ReportSettings(run=str(run_dir), sae=None, classifier=None, device=None, **settings)
        self.report: dict[str, Any] | None = None
        """The report.json dict once written (rank 0)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.skip = False
        self._exists = stage == "fit" and RunFiles(self.run_dir).has_report() and not self.settings.overwrite

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before training: a resumed fit (--ckpt_path) keeps the report it wrote and lets the stages after it
        # continue; a new fit refuses to overwrite one.
        if getattr(self, "_exists", False):
            if trainer.ckpt_path:
                self.skip = True
                return
            raise FileExistsError(
                f"{self.run_dir} already holds a report (neurons.jsonl); set overwrite: true on ReportCallback"
            )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from sae_lab.report.pipeline import build_report

        if getattr(self, "skip", False):
            return

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
