"""``index.html``: the static, self-contained page of a neuron report (inline CSS/JS, images by relative path).

:func:`write_index` reads the run through the run layer (``neurons.jsonl``, ``report.json``, every
``explanations/<method>.jsonl`` and ``evaluation.json`` when there) and (re)writes the page from the templates in
``sae_lab/report/templates/``; every stage that adds something calls it again. The summary is rendered by the
template; the latent list and cards by a small inline script from the data embedded in the page (no fetch, so
it works opened from ``file://``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from markupsafe import Markup

from sae_lab.report import views
from sae_lab.report.pages import render
from sae_lab.run import (
    DEFAULT_PREFERENCE,
    RunFiles,
    atomic_write_text,
    files,
    keep_matching,
    preferred_texts,
    read_explanations,
    read_json,
    read_neurons,
    recorded_identity,
)

logger = logging.getLogger(__name__)

_METRICS = ("fvu", "l0", "dead_frac", "acc_orig", "acc_spliced", "acc_mean_ablated", "acc_recovered", "kl")


def write_index(run_dir: str | Path, extras_dir: str | Path | None = None) -> Path:
    """(Re)write ``run_dir/index.html`` from the report files there.

    Args:
        run_dir: a folder holding ``neurons.jsonl`` and ``report.json``.
        extras_dir: where explanations and ``evaluation.json`` are read from (default: ``run_dir``; the report
            stage renders its staging folder with the run's own explanations).

    Returns:
        The page's path.

    Raises:
        FileNotFoundError: ``run_dir`` holds no report.
    """
    path = RunFiles(run_dir).index
    atomic_write_text(path, render_index(run_dir, extras_dir))
    return path


def render_index(run_dir: str | Path, extras_dir: str | Path | None = None) -> str:
    """The page as a string (see :func:`write_index`)."""
    run = RunFiles(run_dir)
    extras = RunFiles(extras_dir) if extras_dir is not None else run
    if not run.has_report() or not run.report.is_file():
        raise FileNotFoundError(f"{run.root} holds no neuron report (run `python -m sae_lab report` first)")
    report = read_json(run.report) or {}
    neurons = read_neurons(run)
    mine = recorded_identity(run)  # the report's own SAE (the extras folder may still hold another's report)
    mine = mine.id if mine is not None else None
    explanations = {m: keep_matching(r, extras, m, mine) for m, r in read_explanations(extras).items()}
    order = [m for m in DEFAULT_PREFERENCE if m in explanations] + sorted(set(explanations) - set(DEFAULT_PREFERENCE))
    explanations = {m: explanations[m] for m in order}
    preferred = preferred_texts(extras, identity=mine)
    latents = [
        views.latent_view(n, [explanations[m][n.latent] for m in order if n.latent in explanations[m]],
                          preferred.get(n.latent), files.GT_AUC)
        for n in neurons
    ]  # fmt: skip
    evaluation = read_json(extras.evaluation)
    metrics = (report.get("sae") or {}).get("metrics") or {}
    return render(
        "index.html.j2",
        title=f"Neuron report — {report.get('run', '')}",
        report=report,
        gt_auc=files.GT_AUC,
        explained=len(preferred),
        sae_metrics=[(k, metrics[k]) for k in _METRICS if k in metrics],
        hist=histogram(report.get("frequency_histogram") or {}),
        methods=views.method_views(explanations),
        preference=list(DEFAULT_PREFERENCE),
        evaluation=evaluation,
        chart_svg=_evaluation_chart(evaluation) if evaluation else "",
        page_data={"latents": latents},
    )


def _evaluation_chart(evaluation: dict[str, Any]) -> Markup:
    """The evaluation's bar chart (our own SVG, so it goes into the page as markup); empty when the evaluate
    package is not there or cannot draw it."""
    try:
        from sae_lab.evaluate import evaluation_chart_svg
    except ImportError:
        return Markup("")
    try:
        return Markup(evaluation_chart_svg(evaluation))
    except Exception as exc:  # noqa: BLE001 -- the table still shows; the chart is a convenience
        logger.warning("no evaluation chart: %s", exc)
        return Markup("")


def histogram(hist: dict[str, Any], width: int = 420, height: int = 160) -> dict[str, Any] | None:
    """Geometry of the bar chart of log10(frequency) of the live latents (``charts.html.j2``), None if empty."""
    edges, counts = hist.get("log10_edges") or [], hist.get("counts") or []
    if not counts:
        return None
    left, bottom, top_y = 34, 28, 8
    w, h = width - left - 16, height - bottom - top_y
    top = max(max(counts), 1)
    bw = w / len(counts)
    bars = [
        {"x": round(left + j * bw, 1), "y": round(top_y + h - h * c / top, 1), "w": round(max(bw - 1, 1), 1),
         "h": round(h * c / top, 1), "lo": edges[j], "hi": edges[j + 1], "count": c}
        for j, c in enumerate(counts)
    ]  # fmt: skip
    ticks = [{"x": round(left + j * bw, 1), "exp": int(round(e))} for j, e in enumerate(edges)
             if math.isfinite(e) and abs(e - round(e)) < 1e-6]  # fmt: skip
    return {"width": width, "height": height, "bars": bars, "ticks": ticks, "top": top, "top_y": top_y,
            "base_y": top_y + h, "left": left, "right": left + w, "dead": hist.get("dead", 0)}  # fmt: skip
