"""The evaluation's bar chart with error bars, as one inline SVG (no plotting library, no script).

One panel per metric (CoSy AUC, simulation r, strict and lenient naming); in each, one bar per method at its mean
with a whisker of ± one standard error and the number of latents; methods in the table's order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from html import escape
from typing import Any

PANELS = (
    ("cosy_auc", "CoSy AUC", 0.5),
    ("simulation_r", "simulation r", 0.0),
    ("named_strict", "named (strict)", None),
    ("named_lenient", "named (lenient)", None),
)
"""(metric, title, reference line) of each panel; the reference is chance where there is one."""

BASELINE_COLOUR = "#9aa5b1"
METHOD_COLOUR = "#3b6ea5"
PANEL_W, LABEL_W, ROW_H, TOP, GAP = 230, 86, 18, 34, 14


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _panel(x0: float, metric: str, title: str, ref: float | None, methods: Mapping[str, Any],
           baselines: set[str]) -> list[str]:  # fmt: skip
    stats = [methods[m].get(metric) or {} for m in methods]
    values = [v for st in stats for v in (st.get("mean"), (st.get("mean") or 0) - (st.get("se") or 0)) if _finite(v)]
    lo = math.floor(min([0.0, *values]) * 10) / 10  # axis ends on tenths
    hi = (
        math.ceil(
            max([1.0, *[(st.get("mean") or 0) + (st.get("se") or 0) for st in stats if _finite(st.get("mean"))]]) * 10
        )
        / 10
    )
    width = PANEL_W - LABEL_W - 44

    def x(v: float) -> float:
        return x0 + LABEL_W + (v - lo) / (hi - lo) * width

    h = TOP + ROW_H * len(methods)
    out = [f'<text x="{x0 + LABEL_W}" y="14" font-weight="bold">{escape(title)}</text>',
           f'<line x1="{x(0):.1f}" y1="{TOP - 6}" x2="{x(0):.1f}" y2="{h}" stroke="#555"/>',
           f'<text x="{x(lo):.1f}" y="{TOP - 10}" font-size="9" text-anchor="middle">{lo:g}</text>',
           f'<text x="{x(hi):.1f}" y="{TOP - 10}" font-size="9" text-anchor="middle">{hi:g}</text>']  # fmt: skip
    if ref is not None and ref != 0:
        out.append(f'<line x1="{x(ref):.1f}" y1="{TOP - 6}" x2="{x(ref):.1f}" y2="{h}" stroke="#c33" '
                   f'stroke-dasharray="3,3"><title>chance</title></line>')  # fmt: skip
    for i, (method, st) in enumerate(zip(methods, stats)):
        y = TOP + i * ROW_H
        out.append(f'<text x="{x0 + LABEL_W - 4}" y="{y + 12}" text-anchor="end">{escape(method)}</text>')
        mean, se, n = st.get("mean"), st.get("se"), st.get("n", 0)
        if not _finite(mean):
            out.append(f'<text x="{x(0) + 3:.1f}" y="{y + 12}" fill="#888">n/a</text>')
            continue
        colour = BASELINE_COLOUR if method in baselines else METHOD_COLOUR
        a, b = sorted((x(0), x(mean)))
        tip = f"{method}: {mean:.3f}" + (f" ± {se:.3f}" if _finite(se) else "") + f" (n = {n})"
        out.append(f'<rect x="{a:.1f}" y="{y + 3}" width="{max(b - a, 0.5):.1f}" height="{ROW_H - 6}" '
                   f'fill="{colour}"><title>{escape(tip)}</title></rect>')  # fmt: skip
        if _finite(se) and se > 0:
            left, right, c = x(mean - se), x(mean + se), y + ROW_H / 2
            out.append(f'<path d="M{left:.1f},{c}H{right:.1f}M{left:.1f},{c - 4}V{c + 4}M{right:.1f},{c - 4}V{c + 4}" '
                       'stroke="#111" fill="none"/>')  # fmt: skip
        out.append(f'<text x="{x0 + PANEL_W - 40}" y="{y + 12}" font-size="9" fill="#555">n={n}</text>')
    return out


def evaluation_chart_svg(evaluation: Mapping[str, Any]) -> str:
    """The chart of an ``evaluation.json`` as an ``<svg>`` element (mean ± s.e. per method and metric).

    Args:
        evaluation: the parsed ``evaluation.json`` (its ``methods`` block is read).
    """
    from sae_lab.evaluate.rows import BASELINES

    methods = dict(evaluation.get("methods") or {})
    panels = [p for p in PANELS if any((v.get(p[0]) or {}).get("n") for v in methods.values())] or list(PANELS[:2])
    width = GAP + len(panels) * (PANEL_W + GAP)
    height = TOP + ROW_H * max(len(methods), 1) + 10
    body = []
    for i, (metric, title, ref) in enumerate(panels):
        body += _panel(GAP + i * (PANEL_W + GAP), metric, title, ref, methods, set(BASELINES))
    label = "Evaluation: mean ± standard error per method and metric"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="evaluation-chart" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11" role="img" '
            f'aria-label="{label}"><title>{label}</title>' + "".join(body) + "</svg>")  # fmt: skip


__all__ = ["evaluation_chart_svg"]
