"""LINE's page of one latent (``line/<latent>/index.html``), rendered from ``line_latent.html.j2`` with the
report's stylesheet and number formatter (:mod:`sae_lab.report.pages`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from sae_lab.explainers.line.pool import Pool
from sae_lab.report.pages import macro, render

if TYPE_CHECKING:
    from sae_lab.explainers.line.config import LineConfig


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def score_plot(history: Sequence[dict], proposals: Sequence[dict], width: int = 560, height: int = 200) -> Markup:
    """An inline SVG: best score so far per iteration (line) and each scored concept's score (dots).

    Args:
        history: ``{iteration, best_score}`` per iteration.
        proposals: ``{iteration, score}`` per scored concept.
        width: of the SVG, in pixels.
        height: of the SVG, in pixels.
    """
    pts = [(h["iteration"], h["best_score"]) for h in history if _finite(h.get("best_score"))]
    dots = [(p["iteration"], p["score"]) for p in proposals if _finite(p.get("score"))]
    values = [v for _, v in pts + dots]
    if not values:
        return Markup("<p class='muted'>no scores yet</p>")
    lo, hi = min(values), max(values)
    lo, hi = (lo - 0.5, hi + 0.5) if hi - lo < 1e-9 else (lo, hi)
    n = max([i for i, _ in pts + dots] + [1])
    left, right, top, bottom = 40, 10, 10, 24
    w, h = width - left - right, height - top - bottom

    def xy(i: float, v: float) -> tuple[float, float]:
        return round(left + w * i / n, 1), round(top + h * (1 - (v - lo) / (hi - lo)), 1)

    geometry = {"width": width, "height": height, "left": left, "right": left + w, "top_y": top, "base_y": top + h,
                "lo": float(lo), "hi": float(hi), "n": n, "line": " ".join(f"{x},{y}" for x, y in (xy(*p) for p in pts)),
                "dots": [xy(*d) for d in dots]}  # fmt: skip
    return macro("charts.html.j2", "score_plot", geometry)


def render_latent_page(result: dict, ls: dict, images: dict[str, list[str]], config: LineConfig) -> str:
    """The self-contained LINE page of one latent: best concept, score plot, proposals with reasoning, images.

    Args:
        result: the latent's line of ``summary.jsonl`` (``latent``, ``best_concept``, ``best_score``, ``auc``,
            ``mad``, ``mean``, ``iterations``, ``proposals``, ``fallbacks``, ``ground_truth``).
        ls: the latent's loop state (``proposals``, ``history``, ``pool``, ``scored``, ``top_classes``,
            ``random_classes``).
        images: image paths per scored concept, relative to the page.
        config: the run's settings (metric, prompt template, images per concept, pool size).
    """
    initial = [{"iteration": 0, "score": c["score"]} for c in ls["scored"].values() if c["iteration"] == 0]
    pool = [c.to_dict() for c in Pool.from_list(ls["pool"], config.pool_size).sorted()]  # best first, as result.json
    return render(
        "line_latent.html.j2",
        result=result,
        ls=ls,
        pool=pool,
        images=images,
        config=config,
        plot=score_plot(ls["history"], initial + list(ls["proposals"])),
    )
