"""LINE's entry points: :func:`run` (``explain line``), :func:`explain` and :func:`run_line_stage` (quickstart),
and the choice of latents."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sae_lab.data.world import primitives_in_text
from sae_lab.explainers.base import choose_latents as choose_from_report
from sae_lab.explainers.base import parse_latents
from sae_lab.explainers.line.config import LineConfig, LineSettings
from sae_lab.explainers.line.loop import STATE, LineSession
from sae_lab.explainers.line.outputs import ground_truth, scored
from sae_lab.run import GT_AUC, RunFiles, read_neurons
from sae_lab.run.io import read_json


def choose_latents(session: LineSession, n: int) -> list[int]:
    """``n`` latents worth explaining: ground-truth matched ones first (one per primitive, then by AUC), else the
    latents whose control activations vary most."""
    gt = ground_truth(session)
    z = session.control.z_max
    chosen: list[int] = []
    if gt:
        ranked = sorted(gt, key=lambda i: -(gt[i]["image_auc"] or 0.0))
        seen: set[str] = set()
        for i in ranked:
            if gt[i]["primitive"] not in seen and z[:, i].std() > 0:
                chosen.append(i)
                seen.add(gt[i]["primitive"])
        chosen += [i for i in ranked if i not in chosen and z[:, i].std() > 0]
    chosen += [int(i) for i in torch.argsort(z.std(0), descending=True) if int(i) not in chosen]
    return sorted(chosen[:n])


def gt_named_rate(lines: Sequence[dict[str, Any]], min_auc: float = GT_AUC) -> tuple[float | None, int]:
    """Among latents whose ground-truth best primitive has image AUC ≥ ``min_auc`` and whose best concept has a
    real score: the fraction whose best concept names that primitive (``primitives_in_text``), and how many such
    latents there were. A latent none of whose concepts could be scored (its images all failed) names nothing and
    is not counted: no claim rests on a null score."""
    eligible = [r for r in lines if r.get("ground_truth") and (r["ground_truth"].get("image_auc") or 0) >= min_auc
                and scored(r.get("best_score"))]  # fmt: skip
    if not eligible:
        return None, 0
    named = sum(r["ground_truth"]["primitive"] in primitives_in_text(r["best_concept"]) for r in eligible)
    return named / len(eligible), len(eligible)


def explain(
    run_dir: str | Path,
    latents: Sequence[int] | int,
    sae_dir: str | Path | None = None,
    config: LineConfig | None = None,
    overwrite: bool = False,
    **session_kwargs: Any,
) -> list[dict[str, Any]]:
    """Runs (or resumes) LINE on ``latents`` (a list, or a count chosen by :func:`choose_latents`).

    Returns:
        The summary lines (also in ``run_dir/line/summary.jsonl``).
    """
    session = LineSession(run_dir, sae_dir, config, **session_kwargs)
    ids = choose_latents(session, latents) if isinstance(latents, int) else list(latents)
    return session.run(ids, overwrite=overwrite)


def run_line_stage(
    run_dir: str | Path,
    sae_dir: str | Path | None,
    latents: Sequence[int] | int = 8,
    n_iters: int = 4,
    n_images: int = 8,
    seed: int = 0,
    classifier: str | Path | None = None,
    device: str | None = None,
    progress: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """The quickstart's LINE stage, offline (sketch-world renderer + offline proposer).

    Returns:
        The ``line`` block of ``summary.json``: ``latents``, ``gt_named_rate`` (None without ground truth),
        ``images_generated``, ``seconds``.
    """
    t0 = time.perf_counter()
    config = LineConfig(n_iters=n_iters, n_images=n_images, seed=seed)
    session = LineSession(run_dir, sae_dir, config, "renderer", "offline", classifier=classifier, device=device,
                          progress=progress)  # fmt: skip
    ids = choose_latents(session, latents) if isinstance(latents, int) else list(latents)
    lines = session.run(ids, overwrite=overwrite)
    rate, _ = gt_named_rate(lines)
    state = read_json(session.out / STATE)
    return {"latents": len(lines), "gt_named_rate": None if rate is None else round(rate, 4),
            "images_generated": int(state["images_generated"]), "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip


def run(settings: LineSettings) -> dict[str, Any]:
    """``explain line``: LINE on the chosen latents (``all`` live ones, ids, or ``auto:N``); the summary block."""
    settings.check()
    t0 = time.perf_counter()
    spec, ids = settings.latents.strip(), None
    if not spec.startswith("auto:"):  # chosen (and an empty choice refused) before any model is loaded
        files = RunFiles(settings.run)
        if files.has_report():
            ids = choose_from_report(spec, read_neurons(files))
        elif spec == "all":
            raise FileNotFoundError(f"latents 'all' needs the report's neurons.jsonl in {files.root}; run "
                                    "`python -m sae_lab report` first, or name the latents (0-63) or use auto:N")  # fmt: skip
        else:
            ids = parse_latents(spec)
    llm_opts = {"device": settings.device or "auto"} if settings.llm.partition(":")[0] in ("hf", "transformers") else {}
    proposer_opts = {"max_retries": settings.max_retries, "temperature": settings.temperature,
                     "max_new_tokens": settings.max_new_tokens}  # fmt: skip
    session = LineSession(settings.run, settings.sae, settings.config(), settings.images, settings.llm,
                          classifier=settings.classifier, data=settings.data, device=settings.device,
                          image_opts=settings.image_options(), llm_opts=llm_opts, proposer_opts=proposer_opts,
                          progress=settings.progress)  # fmt: skip
    if ids is None:
        ids = choose_latents(session, int(spec[5:]))
    lines = session.run(ids, overwrite=settings.overwrite)
    rate, n = gt_named_rate(lines)
    state = read_json(session.out / STATE)
    # seconds: the loop's own time over every session of this run (a resumed run adds to it), plus this call's setup
    unscored = sum(not scored(r.get("best_score")) for r in lines)  # every image of their concepts failed
    return {"latents": len(lines), "gt_named_rate": None if rate is None else round(rate, 4), "gt_latents": n,
            "failed": unscored, "images_generated": int(state["images_generated"]),
            "seconds": round(max(float(state.get("seconds", 0.0)), time.perf_counter() - t0), 1)}  # fmt: skip
