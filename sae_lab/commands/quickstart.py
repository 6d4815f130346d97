"""`python -m sae_lab quickstart`: every stage on the built-in sketch world, on CPU.

Each stage checks whether its outputs already exist and skips (or resumes) accordingly, so an
interrupted quickstart started again continues where it stopped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sae_lab.summary import read_summary, update_summary

HELP = "run every stage on the built-in sketch world on CPU (checkpoints/quickstart, reports/quickstart)"
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "quickstart"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=".", help="folder that receives checkpoints/, reports/ and data_cache/")
    p.add_argument("--accelerator", default="cpu", help="Lightning accelerator (cpu, gpu, auto)")
    p.add_argument("--force", action="store_true", help="re-run stages that already finished")
    p.add_argument("--smoke", action="store_true", help="a tiny, fast run that checks the plumbing (for tests)")


def _classifier_args(args: argparse.Namespace, root: Path) -> list[str]:
    out = [
        "fit",
        "--config",
        str(CONFIGS / "classifier.yaml"),
        "--checkpoint_root",
        str(root / "checkpoints"),
        "--trainer.accelerator",
        args.accelerator,
        "--data.init_args.cache_dir",
        str(root / "data_cache"),
    ]
    if args.smoke:
        out += [
            "--data.init_args.world_train", "320",
            "--data.init_args.world_test", "64",
            "--data.init_args.batch_size", "32",
            "--data.init_args.num_workers", "0",
            "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "3",
            "--trainer.limit_val_batches", "2",
            "--trainer.enable_progress_bar", "false",
        ]  # fmt: skip
    return out


def stage_classifier(args: argparse.Namespace, root: Path, summary_path: Path) -> dict:
    from sae_lab.cli import SaeLabCLI

    ckpt_dir = root / "checkpoints" / "quickstart" / "classifier"
    done = read_summary(summary_path).get("classifier")
    if done and (ckpt_dir / "best.ckpt").exists() and not args.force:
        print(f"[quickstart] classifier: already trained ({ckpt_dir}), val_acc={done['val_acc']:.4f}")
        return done
    cli_args = _classifier_args(args, root)
    if (ckpt_dir / "last.ckpt").exists() and not args.force:
        print(f"[quickstart] classifier: resuming from {ckpt_dir / 'last.ckpt'}")
        cli_args += ["--ckpt_path", str(ckpt_dir / "last.ckpt")]
    t0 = time.perf_counter()
    argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI reads sys.argv too; give it only `cli_args`
    try:
        cli = SaeLabCLI(args=cli_args)
    finally:
        sys.argv = argv
    seconds = time.perf_counter() - t0
    score = cli.trainer.checkpoint_callback.best_model_score
    val_acc = float(score) if score is not None else float(cli.trainer.callback_metrics["val/acc"])
    block = {"val_acc": round(val_acc, 4), "seconds": round(seconds, 1), "checkpoint": str(ckpt_dir / "best.ckpt")}
    print(f"[quickstart] classifier: val_acc={val_acc:.4f} in {seconds:.0f}s")
    return block


def run(args: argparse.Namespace) -> int:
    root = Path(args.root)
    summary_path = root / "reports" / "quickstart" / "summary.json"
    t0 = time.perf_counter()
    update_summary(summary_path, "classifier", stage_classifier(args, root, summary_path))
    summary = update_summary(summary_path, "total_seconds", round(time.perf_counter() - t0, 1))
    print(f"[quickstart] done in {summary['total_seconds']:.0f}s; figures in {summary_path}")
    return 0
