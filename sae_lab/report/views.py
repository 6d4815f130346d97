"""What ``index.html`` shows, as plain data: one view per latent (list row + card) and per explanation method.

Records come from the run layer; numbers leave here formatted by :func:`~sae_lab.report.pages.num` (so the page's
script never formats one), bar lengths as percentages, and the ground-truth threshold applied as ``matched``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import zip_longest
from typing import Any

from sae_lab.report.pages import DASH, anchor, cost_text, num
from sae_lab.run import Cost, ExplanationRecord, NeuronRecord

IMAGE_KEYS = ("crops", "images", "maps", "patches")
"""Keys of an explanation's ``detail`` that may list images (paths relative to the run folder) to show."""
MAX_CANDIDATES = 8
MAX_IMAGES = 12
_CLASS_CELLS = (("S", 2), ("pmi", 2), ("delta", 3), ("delta_measured", 3), ("w", 3), ("n_on", 0))


def pct(value: float | None, scale: float) -> float:
    """``|value| / scale`` as a bar length in percent (0–100, one decimal)."""
    if value is None or scale <= 0:
        return 0.0
    return round(min(100.0, 100.0 * abs(float(value)) / scale), 1)


def _key(x: Any) -> float:
    """A sort key: the number, or -1 (last when descending) for a missing or non-finite one."""
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else -1.0


def _class_rows(rows: Sequence[Mapping[str, Any]], scale: float) -> list[dict[str, Any]]:
    return [{"name": c.get("class"), "width": pct(c.get("S") or 0.0, scale),
             "cells": [num(c.get(k), d) for k, d in _CLASS_CELLS]} for c in rows]  # fmt: skip


def _images(detail: Mapping[str, Any]) -> list[dict[str, str]]:
    """Thumbnails named in ``detail[crops|images|maps|patches]``: a path, or ``{image|path, caption|concept|score}``;
    taken in turn from each key (a DnD crop beside a generated image, an occlusion map beside its patch)."""
    lists = []
    for key in IMAGE_KEYS:
        items = detail.get(key)
        if not isinstance(items, list):
            continue
        shown = []
        for item in items:
            if isinstance(item, str):
                shown.append({"src": item, "caption": key.rstrip("s")})
            elif isinstance(item, Mapping) and isinstance(item.get("image") or item.get("path"), str):
                caption = item.get("caption") or item.get("concept")
                if caption is None and item.get("score") is not None:
                    caption = num(item["score"], 2)
                shown.append({"src": item.get("image") or item.get("path"), "caption": str(caption or key.rstrip("s"))})
        lists.append(shown)
    out = [x for row in zip_longest(*lists) for x in row if x is not None]
    return out[:MAX_IMAGES]


def _facts(detail: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The scalar entries of ``detail`` (LE's select-split r, the labeller's evidence, …), numbers formatted."""
    skip = {*IMAGE_KEYS, "page"}
    return [(k, num(v)) for k, v in detail.items() if k not in skip and isinstance(v, (str, int, float)) and v != ""]


def explanation_view(rec: ExplanationRecord, preferred: bool = False) -> dict[str, Any]:
    """One method's explanation of one latent as the card shows it."""
    linear = rec.bias is not None or len(rec.terms) > 1
    terms = []
    if linear:
        scale = max((abs(t.weight) for t in rec.terms), default=0.0)
        terms = [{"concept": t.concept, "weight": num(t.weight, 2), "neg": t.weight < 0, "width": pct(t.weight, scale) / 2}
                 for t in sorted(rec.terms, key=lambda t: -t.weight)]  # fmt: skip
    detail = rec.detail if isinstance(rec.detail, Mapping) else {}
    page = detail.get("page")
    return {
        "method": rec.method,
        "anchor": anchor("method", rec.method),
        "text": rec.text,
        "reason": rec.reason,
        "preferred": preferred,
        "terms": terms,
        "bias": num(rec.bias, 2) if linear and rec.bias is not None else None,
        "candidates": [
            {"concept": str(c.get("concept")), "score": num(c.get("score"))}
            for c in rec.candidates[:MAX_CANDIDATES]
            if isinstance(c, Mapping)
        ],  # fmt: skip
        "cost": cost_text(rec.cost),
        "images": _images(detail),
        "facts": _facts(detail),
        "page": page if isinstance(page, str) else None,
    }


def latent_view(
    n: NeuronRecord,
    explanations: Sequence[ExplanationRecord],
    preferred: tuple[str, str] | None,
    gt_auc: float,
) -> dict[str, Any]:
    """A latent's list row and card.

    Args:
        n: its neuron record.
        explanations: its explanation records, in the order the card lists them.
        preferred: ``(text, method)`` the list shows, or None.
        gt_auc: the ground-truth threshold (a latent is ``matched`` at image AUC ≥ it).
    """
    gt = n.ground_truth or None
    auc = n.gt_auc
    scale = max([abs(c.get("S") or 0.0) for c in [*n.top_classes, *n.anti_classes]] + [1e-9])
    label, label_method = preferred or ("", "")
    search = [f"#{n.latent}", str(n.latent), "dead" if n.dead else "live", *(c.get("class", "") for c in n.top_classes),
              (gt or {}).get("primitive") or ""]  # fmt: skip
    for e in explanations:
        search += [f"method:{e.method}", e.text or ""]
    card = {
        "exemplars": [
            {"src": e["image"], "caption": f"{e.get('class', '')} · {num(e.get('z_max'), 2)}"}
            for e in n.exemplars
            if e.get("image")
        ],  # fmt: skip
        "sprite": n.sprite,
        "top_classes": _class_rows(n.top_classes, scale),
        "anti_classes": _class_rows(n.anti_classes, scale),
        "stats": [
            ("frequency (Top-K tokens)", num(n.frequency, 5)),
            ("image frequency", num(n.image_frequency, 4)),
            ("dense frequency", num(n.dense_frequency, 4)),
            ("τ (q-quantile of z_max)", num(n.tau)),
            ("on-images", num(n.n_on)),
            ("mean z_avg on", num(n.mean_on_zavg)),
            ("mean activation", num(n.mean_act)),
            ("monosemanticity", num(n.monosemanticity)),
        ],  # fmt: skip
        "gt": None,
        "explanations": [explanation_view(e, preferred is not None and e.method == label_method) for e in explanations],
    }
    if gt:
        ranked = sorted((gt.get("all") or {}).items(), key=lambda kv: -(kv[1] if kv[1] is not None else -1.0))
        card["gt"] = {"primitive": gt.get("primitive"), "image_auc": num(auc), "token_auc": num(gt.get("token_auc")),
                      "all": [(p, pct(a, 1.0), num(a)) for p, a in ranked]}  # fmt: skip
    return {
        "latent": n.latent,
        "dead": n.dead,
        "matched": (not n.dead) and auc is not None and auc >= gt_auc,
        "key": {"frequency": _key(n.frequency), "monosemanticity": _key(n.monosemanticity), "gt_auc": _key(auc)},
        "label": label,
        "label_method": label_method,
        "thumb": next((e["image"] for e in n.exemplars if e.get("image")), None),
        "top": ", ".join(str(c.get("class")) for c in n.top_classes[:3]),
        "freq": num(n.frequency, 4),
        "mono": num(n.monosemanticity, 2),
        "gt": f"{gt.get('primitive')} {num(auc, 2)}" if gt else DASH,
        "search": " ".join(search).lower(),
        "card": card,
    }


def method_views(explanations: Mapping[str, Mapping[int, ExplanationRecord]]) -> list[dict[str, Any]]:
    """One row per method for the page's "Explanations" table (its anchor is what the evaluation links to)."""
    out = []
    for method, records in explanations.items():
        ok = [r for r in records.values() if r.ok]
        total = sum((r.cost for r in records.values()), Cost())
        per = Cost(**{k: v / len(ok) for k, v in vars(total).items()}) if ok else Cost()
        out.append({"name": method, "anchor": anchor("method", method), "explained": len(ok),
                    "failed": len(records) - len(ok), "cost": cost_text(per)})  # fmt: skip
    return out
