"""Callbacks the CLI tests inject through YAML (tests/ is on PYTHONPATH for those subprocesses)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L


class KillAtStep(L.Callback):
    """Dies like a killed process (no cleanup, no checkpoint) once `step` optimizer steps are done."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            os._exit(17)


class RecordRun(L.Callback):
    """Writes, per rank, the step training started at and every sample index it trained on."""

    def __init__(self, out: str):
        self.out = Path(out)
        self.indices: list[int] = []
        self.start_step = None

    def on_train_start(self, trainer, pl_module):
        self.start_step = trainer.global_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.indices += batch["index"].tolist()

    def on_train_end(self, trainer, pl_module):
        self.out.mkdir(parents=True, exist_ok=True)
        record = {
            "start_step": self.start_step,
            "end_step": trainer.global_step,
            "indices": self.indices,
            "world_size": trainer.world_size,
        }
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
