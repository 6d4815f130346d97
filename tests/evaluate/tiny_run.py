"""A tiny real run for the evaluate tests: a random SAE on the session's test classifier, its report on the test
world, and explanation files written through the run layer."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from sae_lab.run import ExplanationRecord, ExplanationStore, RunFiles, Term

NUM_LATENTS = 16
K = 4


def make_tiny_run(root: Path, ckpt: Path) -> Path:
    """``root/checkpoints/tiny/sae`` + ``root/reports/tiny`` (a report, no explanations); returns the report folder."""
    from sae_lab.models.classifier_io import load_classifier
    from sae_lab.models.sae import SaeConfig, TopKSAE
    from sae_lab.report import run_report

    clf = load_classifier(ckpt)
    torch.manual_seed(0)
    sae = TopKSAE(SaeConfig(d_in=clf.net.channels, num_latents=NUM_LATENTS, k=K), layer=clf.net.layer,
                  classifier=clf.fingerprint, metadata={"classifier_checkpoint": str(ckpt)})  # fmt: skip
    with torch.no_grad():
        sae.b_enc.fill_(0.5)  # most latents fire somewhere
    sae_dir = root / "checkpoints" / "tiny" / "sae"
    sae.save_to_disk(sae_dir)
    run_dir = root / "reports" / "tiny"
    run_report(sae_dir, run_dir, progress=False, n_exemplars=2, knockout_latents=0)
    return run_dir


def clone_run(src: Path, dst: Path) -> Path:
    """Another report folder of the same SAE: the report's files, no explanations or caches."""
    dst.mkdir(parents=True)
    for name in ("neurons.jsonl", "report.json"):
        shutil.copy(src / name, dst / name)
    return dst


def write_method(run_dir: Path, method: str, texts: dict[int, str | None], **extra) -> None:
    """Single-concept explanations (None: no explanation, with a reason)."""
    with ExplanationStore(run_dir, method) as store:
        store.append([ExplanationRecord.single(k, method, t, reason=None if t else "latent never fires", **extra)
                      for k, t in texts.items()])  # fmt: skip


def write_linear(run_dir: Path, method: str, latents: list[int]) -> None:
    with ExplanationStore(run_dir, method) as store:
        for k in latents:
            terms = [Term("circle", 0.6), Term("spokes", 0.3)]
            store.append(ExplanationRecord(k, method, "0.60*circle + 0.30*spokes + 0.10", terms=terms, bias=0.1))


def explanations_dir(run_dir: Path) -> Path:
    return RunFiles(run_dir).explanations_dir
