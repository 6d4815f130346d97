"""The evaluation as a text table and as the ``evaluation`` block of ``summary.json``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sae_lab.evaluate.metrics import GT_METRICS, METRICS

SUMMARY_METRICS = ("cosy_auc", "simulation_r", "named_strict", "named_lenient")
"""The metrics whose means go into ``summary.json`` (DESIGN.md)."""


def summary_block(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The ``evaluation`` block of ``summary.json``: per method the mean of each metric."""
    methods = {m: {k: v[k]["mean"] for k in SUMMARY_METRICS} for m, v in evaluation["methods"].items()}
    return {"latents": len(evaluation["latents"]), "gt_latents": evaluation.get("gt_latents"), "methods": methods,
            "seconds": evaluation.get("work", {}).get("seconds")}  # fmt: skip


def cell(v: Mapping[str, Any] | None) -> str:
    """``mean ± se (n)``, "–" without a value."""
    if not v or v.get("mean") is None:
        return "–"
    se = f" ± {v['se']:.3f}" if v.get("se") is not None else ""
    return f"{v['mean']:.3f}{se} ({v['n']})"


def format_table(evaluation: Mapping[str, Any]) -> str:
    """Method × metric, mean ± s.e. (n); latents missing; cost per latent; then CoSy and simulation on the latents
    with ground truth alone (sketch world)."""
    methods = evaluation["methods"]
    with_gt = any("gt" in v for v in methods.values())
    head = ["method", *METRICS, "missing", "cost/latent", *(f"{m} (gt)" for m in GT_METRICS if with_gt)]
    lines = [head]
    for method, v in methods.items():
        c = v["cost"]
        cost = (
            f"{c['llm_calls']:.1f} llm, {c['images_generated']:.0f} img, {c['captions']:.1f} cap, {c['seconds']:.2f} s"
        )
        gt = [cell((v.get("gt") or {}).get(m)) for m in GT_METRICS] if with_gt else []
        lines.append([method, *(cell(v[m]) for m in METRICS), str(v["missing"]), cost, *gt])
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip() for row in lines)


__all__ = ["SUMMARY_METRICS", "cell", "format_table", "summary_block"]
