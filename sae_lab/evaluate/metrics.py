"""Aggregates of the evaluation table: mean ± standard error over latents, cost per latent."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, fields
from typing import Any

from sae_lab.run.records import Cost

METRICS = ("cosy_auc", "cosy_mad", "simulation_r", "named_strict", "named_lenient")
"""The per-latent scores of a row, in table order."""


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def mean_se(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """``{"mean", "se", "n"}`` over the finite values (None and NaN are left out, not counted as zero).

    The standard error is std (Bessel) / sqrt(n); None with fewer than 2 values, and the mean None with none.
    """
    xs = [float(v) for v in values if finite(v)]
    n = len(xs)
    if n == 0:
        return {"mean": None, "se": None, "n": 0}
    mean = sum(xs) / n
    if n < 2:
        return {"mean": mean, "se": None, "n": 1}
    if max(xs) == min(xs):  # exactly 0, not rounding noise
        return {"mean": xs[0], "se": 0.0, "n": n}
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
    return {"mean": mean, "se": math.sqrt(var / n), "n": n}


def cost_per_latent(costs: Sequence[Cost]) -> dict[str, float]:
    """Mean of every :class:`~sae_lab.run.records.Cost` field over the latents explained (zeros for none)."""
    names = [f.name for f in fields(Cost)]
    if not costs:
        return dict.fromkeys(names, 0.0)
    total = sum(costs, Cost())
    return {k: v / len(costs) for k, v in asdict(total).items()}


GT_METRICS = ("cosy_auc", "cosy_mad", "simulation_r")
"""Metrics also reported on the latents with ground truth alone (naming is defined on those only)."""


def method_table(rows: Sequence[dict[str, Any]], missing: int, costs: Sequence[Cost],
                 gt_latents: Collection[int] | None = None) -> dict[str, Any]:  # fmt: skip
    """One method's entry of ``evaluation.json``: every metric's mean/se/n, latents missing, cost per latent and,
    given the latents with ground truth, ``gt``: CoSy and simulation on those latents alone."""
    out: dict[str, Any] = {m: mean_se(r.get(m) for r in rows) for m in METRICS}
    out["missing"] = missing
    out["undrawable"] = sum(r.get("drawable") is False for r in rows)
    out["cost"] = cost_per_latent(costs)
    if gt_latents is not None:
        out["gt"] = {m: mean_se(r.get(m) for r in rows if r["latent"] in gt_latents) for m in GT_METRICS}
    return out


__all__ = ["GT_METRICS", "METRICS", "cost_per_latent", "finite", "mean_se", "method_table"]
