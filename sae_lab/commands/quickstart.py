"""`python -m sae_lab quickstart`: every stage on the built-in sketch world, on CPU.

Each stage checks whether its outputs already exist and skips (or resumes) accordingly, so an
interrupted quickstart started again continues where it stopped.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sae_lab.run.files import SAE_CFG, SAE_WEIGHTS, RunFiles

STAGE_METHODS = {"evaluation": "evaluate"}
"""summary.json block → the stage method that makes it."""
HELP = "run every stage on the built-in sketch world on CPU (checkpoints/quickstart, reports/quickstart)"
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "quickstart"

SMOKE_CLASSIFIER = [
    "--data.init_args.world_train", "320",
    "--data.init_args.world_test", "64",
    "--data.init_args.batch_size", "32",
    "--data.init_args.num_workers", "0",
    "--trainer.max_epochs", "1",
    "--trainer.limit_train_batches", "3",
    "--trainer.limit_val_batches", "2",
]  # fmt: skip
SMOKE_SAE = [
    "--model.init_args.num_latents", "64",
    "--data.init_args.batch_size", "256",
    "--trainer.max_epochs", "1",
    "--trainer.limit_train_batches", "3",
]  # fmt: skip


@dataclass(frozen=True)
class QuickstartSettings:
    """Where the quickstart writes, on what hardware, and whether it starts over or only checks the plumbing."""

    root: str = "."
    """Folder that receives checkpoints/, reports/ and data_cache/."""
    accelerator: str = "cpu"
    """Lightning accelerator of the two fits (cpu, gpu, auto)."""
    force: bool = False
    """Re-run stages that already finished."""
    smoke: bool = False
    """A tiny, fast run that checks the plumbing (for tests)."""

    def __post_init__(self):
        if not self.accelerator.strip():
            raise ValueError("accelerator must name a Lightning accelerator (cpu, gpu, auto), got ''")
        if Path(self.root).exists() and not Path(self.root).is_dir():
            raise ValueError(f"root must be a folder, got the file {self.root}")


def run_fit(cli_args: list[str]):
    """Runs `python -m sae_lab fit ARGS` in this process; returns the LightningCLI."""
    from sae_lab.cli import SaeLabCLI

    argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI reads sys.argv too; give it only `cli_args`
    try:
        return SaeLabCLI(args=["fit", *cli_args])
    finally:
        sys.argv = argv


class Quickstart:
    """The stages, in order; each returns its summary.json block."""

    def __init__(self, args: QuickstartSettings):
        self.args = args  # the settings; named args since the stages read self.args.smoke etc.
        self.root = Path(args.root)
        self.ckpt_root = self.root / "checkpoints"
        self.run_dir = self.ckpt_root / "quickstart"
        self.summary_path = RunFiles(self.root / "reports" / "quickstart").summary

    def common(self, config: str) -> list[str]:
        out = ["--config", str(CONFIGS / config), "--checkpoint_root", str(self.ckpt_root),
               "--trainer.accelerator", self.args.accelerator]  # fmt: skip
        return out + (["--trainer.enable_progress_bar", "false"] if self.args.smoke else [])

    def finished(self, block: str, *files: Path) -> dict | None:
        from sae_lab.run.summary import read_summary

        done = read_summary(self.summary_path).get(block)
        if done and all(f.exists() for f in files) and not self.args.force:
            return done
        return None

    def fit_stage(self, block: str, ckpt_dir: Path, cli_args: list[str], done_file: Path):
        """Runs a `fit`, resuming from last.ckpt when an earlier run died; returns (cli, seconds) or the done block."""
        done = self.finished(block, done_file)
        if done:
            print(f"[quickstart] {block}: already done ({ckpt_dir}); --force re-runs it")
            return None, done
        if (ckpt_dir / "last.ckpt").exists() and not self.args.force:
            print(f"[quickstart] {block}: resuming from {ckpt_dir / 'last.ckpt'}")
            cli_args = [*cli_args, "--ckpt_path", str(ckpt_dir / "last.ckpt")]
        t0 = time.perf_counter()
        cli = run_fit(cli_args)
        return cli, round(time.perf_counter() - t0, 1)

    def classifier(self) -> dict:
        ckpt_dir = self.run_dir / "classifier"
        args = self.common("classifier.yaml") + ["--data.init_args.cache_dir", str(self.root / "data_cache")]
        cli, seconds = self.fit_stage("classifier", ckpt_dir, args + (SMOKE_CLASSIFIER if self.args.smoke else []),
                                      ckpt_dir / "best.ckpt")  # fmt: skip
        if cli is None:
            return seconds
        score = cli.trainer.checkpoint_callback.best_model_score
        val_acc = float(score) if score is not None else float(cli.trainer.callback_metrics["val/acc"])
        print(f"[quickstart] classifier: val_acc={val_acc:.4f} in {seconds:.0f}s")
        return {"val_acc": round(val_acc, 4), "seconds": seconds}

    def sae(self) -> dict:
        ckpt_dir = self.run_dir / "sae"
        args = self.common("sae.yaml") + ["--data.init_args.classifier", str(self.run_dir / "classifier/best.ckpt")]
        cli, seconds = self.fit_stage("sae", ckpt_dir, args + (SMOKE_SAE if self.args.smoke else []),
                                      ckpt_dir / SAE_WEIGHTS)  # fmt: skip
        if cli is None:
            return seconds
        val = json.loads((ckpt_dir / SAE_CFG).read_text())["metadata"]["val"]
        block = {k: round(val[k], 4) for k in ("fvu", "l0", "dead_frac", "acc_recovered", "kl")}
        block["seconds"] = seconds
        print("[quickstart] sae: " + ", ".join(f"{k}={v}" for k, v in block.items()))
        return block

    @property
    def report_dir(self) -> Path:
        return self.root / "reports" / "quickstart"

    def report(self) -> dict:
        from sae_lab.report import run_report

        done = self.finished("report", RunFiles(self.report_dir).neurons)
        if done:
            print(f"[quickstart] report: already done ({self.report_dir}); --force re-runs it")
            return done
        block = run_report(self.run_dir / "sae", self.report_dir, overwrite=True, progress=not self.args.smoke)
        print("[quickstart] report: " + ", ".join(f"{k}={v}" for k, v in block.items()))
        return block

    def labels(self) -> dict:
        from sae_lab.explainers.labels import run_labels

        # Resumable on its own: latents already labelled with the same prompt are skipped.
        block = run_labels(self.report_dir, "offline", progress=not self.args.smoke)
        print("[quickstart] labels: " + ", ".join(f"{k}={v}" for k, v in block.items()))
        return block

    def explainer(self, name: str, **settings) -> dict | None:
        """Runs explanation method ``name`` with offline backends (None when its package is not installed)."""
        from sae_lab.explainers.base import get_explainer

        try:
            explainer = get_explainer(name)
        except ValueError as e:
            print(f"[quickstart] {name}: skipped ({e})")
            return None
        fields = {f for f in explainer.settings.__dataclass_fields__}
        given = {k: v for k, v in {"run": str(self.report_dir), "progress": False, **settings}.items() if k in fields}
        block = explainer.run(explainer.settings(**given))
        for method in explainer.methods:  # ground-truth naming over every explained latent that has ground truth
            strict, lenient, n = naming_rates(self.report_dir, method)
            if n:
                key = "" if len(explainer.methods) == 1 else f"{method}_"
                block.update({f"{key}named_strict": strict, f"{key}named_lenient": lenient, f"{key}gt_latents": n})
        print(f"[quickstart] {name}: " + ", ".join(f"{k}={v}" for k, v in block.items() if not isinstance(v, dict)))
        return block

    def latents(self) -> str:
        """The latents every explanation method explains: all live ones (the smoke run: a seeded sample of 4)."""
        return "sample:4" if self.args.smoke else "all"

    def line(self) -> dict | None:
        smoke = self.args.smoke
        return self.explainer("line", latents=self.latents(), n_iters=1 if smoke else 4, n_images=2 if smoke else 8)

    def le(self) -> dict | None:
        return self.explainer("le", latents=self.latents())

    def dnd(self) -> dict | None:
        return self.explainer("dnd", latents=self.latents())

    def patches(self) -> dict | None:
        return self.explainer("patches", latents=self.latents())

    def evaluate(self) -> dict | None:
        try:
            from sae_lab.evaluate import EvaluateSettings, run_evaluate
        except ImportError:
            print("[quickstart] evaluate: not available; skipped")
            return None
        fields = set(EvaluateSettings.__dataclass_fields__)
        given = {k: v for k, v in {"run": str(self.report_dir), "progress": False}.items() if k in fields}
        block = run_evaluate(EvaluateSettings(**given))
        print(f"[quickstart] evaluate: {len(block.get('methods', {}))} methods on {block.get('latents')} latents")
        return block

    def why(self) -> dict:
        from sae_lab.inference import run_why_stage

        return run_why_stage(self.report_dir, self.run_dir / "sae", n_images=4 if self.args.smoke else 8)

    STAGES = ("classifier", "sae", "report", "labels", "line", "le", "dnd", "patches", "evaluation", "why")

    def run(self) -> dict:
        """Runs every stage; total_seconds is this run's wall time plus the recorded time of skipped stages."""
        from sae_lab.run.summary import read_summary, update_summary

        t0 = time.perf_counter()
        skipped = 0.0
        for block in self.STAGES:
            before = read_summary(self.summary_path).get(block)
            values = getattr(self, STAGE_METHODS.get(block, block))()
            if values is None:
                continue
            if before is not None and values == before:
                skipped += float(values.get("seconds", 0.0))
            update_summary(self.summary_path, block, values)
        return update_summary(self.summary_path, "total_seconds", round(time.perf_counter() - t0 + skipped, 1))


def naming_rates(report_dir: Path, method: str) -> tuple[float | None, float | None, int]:
    """Strict and lenient ground-truth naming (DESIGN, "Evaluation") of a method over all its explained latents
    whose best primitive reaches image AUC ≥ GT_AUC, and how many there are."""
    from sae_lab.evaluate.naming import naming
    from sae_lab.run import ExplanationStore, neurons_by_latent

    neurons = neurons_by_latent(report_dir)
    scores = [naming(rec, neurons.get(latent)) for latent, rec in ExplanationStore(report_dir, method).latest().items()]
    scores = [s for s in scores if s[0] is not None]
    if not scores:
        return None, None, 0
    return (round(sum(s[0] for s in scores) / len(scores), 4), round(sum(s[1] for s in scores) / len(scores), 4),
            len(scores))  # fmt: skip


def run_quickstart(s: QuickstartSettings) -> int:
    """Runs every stage (resuming finished ones) and says where the figures are."""
    summary = Quickstart(s).run()
    where = RunFiles(Path(s.root) / "reports" / "quickstart").summary
    print(f"[quickstart] done in {summary['total_seconds']:.0f}s; figures in {where}")
    return 0
