"""LINE's outputs: per-latent folders (params, proposals, history, result, page), ``line/summary.jsonl`` and
``explanations/line.jsonl`` (the one schema), and the refreshed report page."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

from sae_lab.data.world import primitives_in_text
from sae_lab.explainers.line.page import render_latent_page
from sae_lab.explainers.line.pool import Pool
from sae_lab.run import Cost, ExplanationStore, LineResult, read_neurons
from sae_lab.run.files import RunFiles
from sae_lab.run.io import atomic_write_text, write_json, write_jsonl

LineSession = Any
"""A :class:`~sae_lab.explainers.line.loop.LineSession` (not imported: the loop imports this module)."""
logger = logging.getLogger(__name__)


def _dump(path: Path, value: Any, lines: bool = False) -> None:
    if lines:
        write_jsonl(path, value)
    else:
        write_json(path, value)


def ground_truth(session: LineSession) -> dict[int, dict[str, Any]]:
    """Each latent's ground-truth best primitive: from the report's ``neurons.jsonl``, else the control set."""
    out: dict[int, dict[str, Any]] = {}
    if session.files.has_report():
        out = {n.latent: {"primitive": n.gt_primitive, "image_auc": n.gt_auc, "source": "report"}
               for n in read_neurons(session.files) if n.gt_primitive}  # fmt: skip
        if out:
            return out
    gt = session.control.ground_truth()
    if gt is not None and session.control.primitive_names:
        best, auc = gt
        for i in range(len(best)):
            if math.isfinite(float(auc[i])):
                out[i] = {"primitive": session.control.primitive_names[int(best[i])], "image_auc": float(auc[i]),
                          "source": "control"}  # fmt: skip
    return out


def write_outputs(session: LineSession, state: dict, params: dict) -> list[dict[str, Any]]:
    gt = ground_truth(session)
    paths = session.paths()
    lines = []
    for lat in params["latents"]:
        ls = state["latents"][str(lat)]
        folder = session.out / str(lat)
        pool = Pool.from_list(ls["pool"], session.config.pool_size)
        best = pool.best()
        images = _latent_images(session, ls, folder)
        result = {
            "latent": lat,
            "best_concept": best.concept,
            "best_score": _number(best.score),  # None, not NaN: the same in memory as in the file
            "metric": session.config.metric,
            "auc": _number(best.auc),
            "mad": _number(best.mad),
            "mean": _number(best.mean),
            "names_primitives": primitives_in_text(best.concept) if scored(best.score) else [],
            "ground_truth": gt.get(lat),
            "iterations": len(ls["history"]) - 1,
            "proposals": len(ls["proposals"]),
            "fallbacks": sum(p["fallback"] for p in ls["proposals"]),
            "page": RunFiles.line_page(lat),
        }
        _dump(folder / "params.json", {**params, "paths": paths, "latent": lat, "top_classes": ls["top_classes"],
                                       "random_classes": ls["random_classes"]})  # fmt: skip
        _dump(folder / "proposals.jsonl", ls["proposals"], lines=True)
        _dump(folder / "history.jsonl", ls["history"], lines=True)
        _dump(folder / "result.json", {**result, "pool": [p.to_dict() for p in pool.sorted()]})
        atomic_write_text(
            session.files.root / RunFiles.line_page(lat), render_latent_page(result, ls, images, session.config)
        )
        lines.append(result)
    write_jsonl(session.files.line_summary, lines)
    # the settings of these results, for people and evaluate (the state file carries its own copy)
    write_json(session.out / "params.json", {**params, "paths": paths, "settings_hash": params_hash(params)})
    write_explanations(session, state, params, lines)
    _refresh_report(session)
    return lines


def scored(score: float | None) -> bool:
    """A real score: not None, not NaN (a concept none of whose images could be made has none)."""
    return isinstance(score, (int, float)) and math.isfinite(score)


def _number(x: float | None) -> float | None:
    return float(x) if scored(x) else None


def _latent_images(session: LineSession, ls: dict, folder: Path) -> dict[str, list[str]]:
    """Image paths (relative to the latent's folder) of every scored concept; copied when ``save_images``."""
    out: dict[str, list[str]] = {}
    n = int(session.config.n_images)
    for concept in ls["scored"]:
        paths = session.cache.paths(concept, n)
        if session.config.save_images:
            slug = "".join(ch if ch.isalnum() else "-" for ch in concept)[:40]
            dest = []
            for i, p in enumerate(paths):
                target = folder / "images" / f"{slug}-{i}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    shutil.copyfile(p, target)
                dest.append(f"images/{target.name}")
            out[concept] = dest
        else:
            out[concept] = [f"../cache/{p.name}" for p in paths]
    return out


def _refresh_report(session: LineSession) -> None:
    """Re-render the main report's index.html (it shows LINE results) when a report is there."""
    if not session.files.has_report() or not session.files.report.is_file():
        return
    try:
        from sae_lab.report.html import write_index

        write_index(session.run_dir)
    except Exception as exc:  # noqa: BLE001 -- the LINE outputs are written; the page is a convenience
        logger.warning("could not re-render %s/index.html: %s", session.run_dir, exc)


def write_explanations(session: LineSession, state: dict, params: dict, lines: list[dict[str, Any]]) -> None:
    """``explanations/line.jsonl``: one record per latent, the run's cost split evenly among its latents (the images
    and forward passes are shared work)."""
    n = max(1, len(lines))
    llm = session.proposer.name != session.offline.name
    share = Cost(images_generated=round(state.get("images_generated", 0) / n),
                 forward_images=round(session.scorer.images_scored / n), seconds=round(state.get("seconds", 0.0) / n, 3))  # fmt: skip
    backends = {"llm": session.proposer.name, "images": session.image_backend.identity, "sae": session.sae_id}
    settings_hash = params_hash(params)
    records = []
    for result in lines:
        ls = state["latents"][str(result["latent"])]
        pool = Pool.from_list(ls["pool"], session.config.pool_size)
        line = LineResult(result["latent"], result["best_concept"], result["best_score"], result["metric"],
                          [p.to_dict() for p in pool.sorted()], result["proposals"])  # fmt: skip
        cost = Cost(**{**share.__dict__, "llm_calls": result["proposals"] if llm else 0})
        records.append(line.to_explanation(settings_hash, backends, cost))
    store = ExplanationStore(session.files, "line")
    write_jsonl(store.path, [r.to_json() for r in sorted(records, key=lambda r: r.latent)])


def params_hash(params: dict) -> str:
    """Hash of a LINE run's settings (not its latents)."""
    import hashlib
    import json

    blob = json.dumps({k: v for k, v in params.items() if k != "latents"}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]
