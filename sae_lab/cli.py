"""The Lightning side of the command line: `fit | validate | test | predict` through LightningCLI.

Configs pick the LightningModule and the DataModule by ``class_path`` / ``init_args``; two extra
top-level keys, ``name`` and ``checkpoint_root``, put checkpoints and TensorBoard logs under
``<checkpoint_root>/<name>/``; the ``checkpoint`` section configures ModelCheckpoint.
"""

from __future__ import annotations

import os
import warnings

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from sae_lab.errors import check_checkpoint, parse_error_line


def run_dir(checkpoint_root: str, name: str) -> str:
    return os.path.join(checkpoint_root, name)


class OneLineErrorParser(LightningArgumentParser):
    """Lightning's parser, reporting a bad command line as one ``error:`` line (jsonargparse's can span lines)."""

    def error(self, message: str, ex: Exception | None = None):
        super().error(parse_error_line(message), ex)


class ScrubbedSaveConfig(SaveConfigCallback):
    """Lightning's ``config.yaml`` beside the logs, with secrets masked: a callback's ``--llm`` spec may carry a key
    in its URL (``openai:m@http://user:KEY@host/v1``), and the saved config must not."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        from sae_lab.run.io import atomic_write_text
        from sae_lab.run.secrets import scrub

        saved = self.already_saved
        super().setup(trainer, pl_module, stage)
        log_dir = trainer.log_dir if self.save_to_log_dir and not saved else None  # a broadcast: every rank asks
        if log_dir is None or not trainer.is_global_zero:
            return
        path = os.path.join(log_dir, self.config_filename)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                text = f.read()
            clean = scrub(text)
            if clean != text:
                atomic_write_text(path, clean)


class SaeLabCLI(LightningCLI):
    """LightningCLI with run names, a configurable ModelCheckpoint and our defaults."""

    def __init__(self, args=None, run: bool = True, **kwargs):
        super().__init__(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_callback=ScrubbedSaveConfig,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": "python -m sae_lab"},
            parser_class=OneLineErrorParser,
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--name", type=str, default="run", help="Run name: outputs go to <checkpoint_root>/<name>/."
        )
        parser.add_argument("--checkpoint_root", type=str, default="checkpoints", help="Folder holding all runs.")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.filename": "best",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.link_arguments(("checkpoint_root", "name"), "checkpoint.dirpath", compute_fn=run_dir)

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if cfg.trainer.get("default_root_dir") is None:
            cfg.trainer.default_root_dir = run_dir(cfg.checkpoint_root, cfg.name)
        ckpt = cfg.get("ckpt_path")
        if isinstance(ckpt, str):
            check_checkpoint(ckpt)  # before the model and data are built: a typo fails in seconds, as one line


def lightning_main(args: list[str] | None = None) -> SaeLabCLI:
    # `python -m sae_lab` passes its own argv (less --debug); Lightning would warn that sys.argv is there too.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    return SaeLabCLI(args=args)
