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


class RecordSaeState(L.Callback):
    """Writes what a resumed SAE run starts from: step, dead-latent counters, optimizer state."""

    def __init__(self, out: str):
        self.out = Path(out)

    def on_train_start(self, trainer, pl_module):
        opt = trainer.optimizers[0]
        states = [opt.state[p] for p in opt.param_groups[0]["params"]]
        record = {
            "global_step": trainer.global_step,
            "tokens_since_fired": pl_module.dead_latents.tokens_since_fired.tolist(),
            "adam_step": [float(s["step"]) if s else 0.0 for s in states],
            "exp_avg_norm": [float(s["exp_avg"].norm()) if s else 0.0 for s in states],
        }
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(record))


class RecordMetrics(L.Callback):
    """Writes every rank's logged metrics at the end of fit."""

    def __init__(self, out: str):
        self.out = Path(out)

    def on_fit_end(self, trainer, pl_module):
        self.out.mkdir(parents=True, exist_ok=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        (self.out / f"metrics{trainer.global_rank}.json").write_text(json.dumps(metrics))


class KillAtFitEnd(L.Callback):
    """Dies like a killed process when its turn comes among the end-of-fit callbacks (list it between two)."""

    def on_fit_end(self, trainer, pl_module):
        os._exit(17)
