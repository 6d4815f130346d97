"""ExplainCallback: an explanation method at the end of SAE training, after the report, on every rank's share.

List it after ``ReportCallback`` (callbacks run in list order); several of them chain, one per method, and an
``EvaluateCallback`` after them scores the lot::

    trainer:
      callbacks:
        - class_path: sae_lab.report.callback.ReportCallback
          init_args: {run_dir: reports/quickstart}
        - class_path: sae_lab.explainers.callback.ExplainCallback
          init_args: {method: le, run_dir: reports/quickstart, settings: {latents: all}}

Under DDP each rank explains a disjoint share of the latents (every ``world_size``-th of the chosen ids) in its
own folder ``<run>/ranks/<rank>/`` (the report's files linked in), and rank 0 merges the shares into
``<run>/explanations/<method>.jsonl``. Each method resumes on its own, so a ``fit`` killed during the callbacks and
started again with ``--ckpt_path last`` trains nothing and continues the explanations where they stopped.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L

from sae_lab.run.files import NEURONS, REPORT, RunFiles

logger = logging.getLogger(__name__)

RANKS = "ranks"
"""Folder of the per-rank shares under the report folder."""


class ExplainCallback(L.Callback):
    """Runs one explanation method on the trained SAE when ``fit`` ends.

    Args:
        method: the method (``labels``, ``line``, ``le``, ``dnd``, ``patches``).
        run_dir: the report folder the ``ReportCallback`` before it writes.
        settings: the method's own settings (``explain METHOD --help`` lists them), e.g. ``{latents: sample:64}``.
    """

    def __init__(self, method: str, run_dir: str, settings: dict[str, Any] | None = None) -> None:
        from sae_lab.explainers.base import get_explainer

        self.method, self.run_dir, self.settings = method, Path(run_dir), dict(settings or {})
        self.explainer = get_explainer(method)  # an unknown method fails before training, not after it
        fields = set(self.explainer.settings.__dataclass_fields__)
        unknown = sorted(set(self.settings) - fields)
        if unknown:
            raise ValueError(f"ExplainCallback({method}): unknown settings {unknown}; known: {sorted(fields)}")
        self.block: dict[str, Any] | None = None
        """The method's summary block (rank 0)."""

    def _settings(self, run: Path, latents: str, sae_dir: Path, classifier: str) -> Any:
        given = {"sae": str(sae_dir), "classifier": classifier, **self.settings, "run": str(run), "latents": latents}
        if "progress" in self.explainer.settings.__dataclass_fields__:
            given.setdefault("progress", False)
        settings = self.explainer.settings(**given)
        settings.check()
        return settings

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from sae_lab.explainers.base import choose_latents
        from sae_lab.run import read_neurons
        from sae_lab.run.summary import update_summary

        sae, clf = getattr(pl_module, "sae", None), getattr(pl_module, "classifier", None)
        if sae is None or clf is None or not hasattr(pl_module, "export_path"):
            raise ValueError("ExplainCallback needs an SaeModule trained on a FeatureTokenDataModule")
        sae_dir = Path(pl_module.export_path())
        if trainer.is_global_zero:  # the explainers load the SAE from its export (the module writes it again)
            sae.save_to_disk(sae_dir)
        trainer.strategy.barrier(f"explain-{self.method}-export")
        files = RunFiles(self.run_dir)
        spec = str(self.settings.get("latents", "all"))
        world, rank = trainer.world_size, trainer.global_rank
        if world == 1 or spec.startswith("auto:"):
            if rank == 0:
                self.block = self.explainer.run(self._settings(files.root, spec, sae_dir, clf.path))
        else:
            ids = choose_latents(spec, read_neurons(files))
            share = ids[rank::world]
            folder = rank_folder(files, rank)
            if share:
                self.explainer.run(self._settings(folder, ",".join(map(str, share)), sae_dir, clf.path))
            trainer.strategy.barrier(f"explain-{self.method}")
            if rank == 0:
                merged = merge_shares(files, self.explainer.methods, world)
                self.block = {"latents": merged, "ranks": world}
        if rank == 0 and self.block is not None:
            update_summary(files.summary, self.method, self.block)
        trainer.strategy.barrier(f"explain-{self.method}-done")


def rank_folder(files: RunFiles, rank: int) -> Path:
    """``<run>/ranks/<rank>/``: the report's files linked in, so a method runs there on its share alone."""
    folder = files.root / RANKS / str(rank)
    folder.mkdir(parents=True, exist_ok=True)
    for name in (NEURONS, REPORT):
        link = folder / name
        if not link.exists():
            try:
                os.symlink(os.path.relpath(files.root / name, folder), link)
            except OSError:  # no symlinks here: a copy
                shutil.copyfile(files.root / name, link)
    return folder


def merge_shares(files: RunFiles, methods: tuple[str, ...], world: int) -> int:
    """Rank 0: every rank's explanations of each method into ``<run>/explanations/<method>.jsonl`` (the latest
    record per latent; a latent explained by two ranks is an error). Returns the latents merged."""
    from sae_lab.run import ExplanationStore
    from sae_lab.run.io import write_jsonl

    total = 0
    for method in methods:
        merged = ExplanationStore(files, method).latest()  # what an earlier run already merged
        seen: dict[int, int] = {}
        for rank in range(world):
            for latent, record in ExplanationStore(files.root / RANKS / str(rank), method).latest().items():
                if latent in seen:
                    raise ValueError(f"latent {latent} of {method} was explained by ranks {seen[latent]} and {rank}")
                seen[latent] = rank
                merged[latent] = record
        write_jsonl(files.explanations(method), (merged[k].to_json() for k in sorted(merged)))
        total = max(total, len(seen))
    return total
