"""EvaluateCallback: ``evaluate`` at the end of SAE training, after the report and the explainer callbacks.

List it last::

    trainer:
      callbacks:
        - class_path: sae_lab.report.callback.ReportCallback
          init_args: {run_dir: reports/quickstart}
        - class_path: sae_lab.explainers.callback.ExplainCallback
          init_args: {method: line, run_dir: reports/quickstart}
        - class_path: sae_lab.evaluate.callback.EvaluateCallback
          init_args: {run_dir: reports/quickstart}

Rank 0 scores (the sample is small and its images are cached); the other ranks wait.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L


class EvaluateCallback(L.Callback):
    """Scores every explanation of the run when ``fit`` ends.

    Args:
        run_dir: the report folder.
        settings: other fields of :class:`~sae_lab.evaluate.EvaluateSettings` (``evaluate --help`` lists them),
            e.g. ``{n_latents: 64, generator: renderer}``.
    """

    def __init__(self, run_dir: str, settings: dict[str, Any] | None = None) -> None:
        from sae_lab.evaluate.settings import EvaluateSettings

        self.run_dir, self.settings = Path(run_dir), dict(settings or {})
        fields = set(EvaluateSettings.__dataclass_fields__)
        unknown = sorted(set(self.settings) - fields)
        if unknown:
            raise ValueError(f"EvaluateCallback: unknown settings {unknown}; known: {sorted(fields)}")
        self.block: dict[str, Any] | None = None
        """The ``evaluation`` block of summary.json (rank 0)."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from sae_lab.evaluate import EvaluateSettings, run_evaluate

        if trainer.is_global_zero:
            sae_dir = pl_module.export_path() if hasattr(pl_module, "export_path") else None
            clf = getattr(pl_module, "classifier", None)
            given = {"sae": None if sae_dir is None else str(sae_dir), "progress": False,
                     "classifier": None if clf is None else clf.path, **self.settings, "run": str(self.run_dir)}  # fmt: skip
            settings = EvaluateSettings(**given)
            settings.check()
            self.block = run_evaluate(settings)
        trainer.strategy.barrier("evaluate")
