"""What DnD keeps per latent: ``reports/<run>/dnd/<latent>/`` and its line of ``explanations/dnd.jsonl``.

The folder holds ``crops/NN.png`` (the kept top images, originals and crops, best first), ``generated/NN.png``
(the best concept's most activating generated images), ``captions.json``, ``summaries.json`` and
``candidates.json``. The record's ``detail`` names thumbnails for the report card by paths relative to the run
folder (``crops``, ``images``), the summaries, the seeds, any notes, and how its images were drawn: ``template`` and
``image_seed`` (the run seed the per-image seeds are hashed from; the generator is ``backends["images"]``), which
evaluate's held-out check reads from each record — so records of two runs with other templates never pass for one.
A latent whose backend calls failed is marked ``detail["failed"]`` and tried again by the next run.
``dnd/settings.json`` is a copy of the last run's settings for people, written after its records.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sae_lab.explainers.dnd.settings import DndSettings
from sae_lab.explainers.dnd.work import LatentWork
from sae_lab.run.files import PATHS_KEY, RELATIVE_TO_RUN, RunFiles, relative_to_run
from sae_lab.run.io import write_json
from sae_lab.run.records import Cost, ExplanationRecord
from sae_lab.run.secrets import scrub, scrub_value

METHOD = "dnd"
CARD_CROPS = 8
"""Kept images named in ``detail["crops"]`` (the card shows 12 thumbnails in all)."""
CARD_IMAGES = 4
"""Generated images of the best concept named in ``detail["images"]``."""


def latent_dir(files: RunFiles, latent: int) -> Path:
    return files.method_dir(METHOD) / str(latent)


def _rel(files: RunFiles, path: Path) -> str:
    """``path`` relative to the run folder when inside it (the card's convention), else absolute."""
    path, root = Path(path).resolve(), files.root.resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _save_png(image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def write_latent(files: RunFiles, w: LatentWork, probe_rows, settings: DndSettings, seconds: float,
                 backends: dict[str, Any], digest: str) -> ExplanationRecord:  # fmt: skip
    """Writes the latent's folder and returns its record.

    Args:
        files: The run folder.
        w: The latent's work.
        probe_rows: (N,) the probe images' rows in their split.
        settings: The run's settings (seed, pooling, prompt template).
        seconds: Its share of the wall time.
        backends: The backends by role.
        digest: The settings hash.
    """
    seed = settings.seed
    folder = latent_dir(files, w.latent)
    if folder.exists():
        shutil.rmtree(folder)  # a redone latent leaves nothing of the last attempt
    (folder / "crops").mkdir(parents=True)
    shown = []
    for n, sh in enumerate(w.kept):
        path = folder / "crops" / f"{n:02d}.png"
        _save_png(sh.image, path)
        shown.append({"image": _rel(files, path), "kind": sh.kind, "probe_index": sh.probe_index,
                      "row": int(probe_rows[sh.probe_index]), "box": list(sh.box) if sh.box else None,
                      "activation": round(sh.activation, 6), "caption": sh.caption})  # fmt: skip
    write_json(folder / "captions.json", shown)
    write_json(folder / "summaries.json", [{"label": x.label, "source": x.source, "answer": x.answer,
                                            "attempts": x.attempts, "errors": x.errors, "order": x.order,
                                            "shuffle_seed": x.shuffle_seed, "llm_seed": x.llm_seed}
                                           for x in w.summaries])  # fmt: skip
    scored = {c.concept: c for c in w.chosen}
    table = []
    for k, concept in enumerate(w.candidates):
        row = {"concept": concept, "chosen": concept in scored, "activations": [round(a, 6) for a in w.acts[k]]
               if k < len(w.acts) else [], "images": [_rel(files, p) for p in w.image_paths[k]]
               if k < len(w.image_paths) else []}  # fmt: skip
        if w.ranking is not None and w.weights:
            n = len(w.candidates)
            row.update(rank_score=w.ranking.rank_scores[k], position=w.ranking.positions[k], weight=w.weights[k],
                       score=(n - w.ranking.positions[k]) * w.weights[k], ranks=w.ranking.ranks[k],
                       top_hits=len(w.ranking.hits[k]))  # fmt: skip
        table.append(row)
    write_json(folder / "candidates.json", {"candidates": table, "chosen": [c.to_json() for c in w.chosen]})
    thumbs = _generated(folder, w)
    cost = Cost(llm_calls=round(w.work["llm_calls"]), images_generated=round(w.work["images_generated"]),
                captions=round(w.work["captions"]), forward_images=round(w.work["forward_images"]),
                seconds=round(seconds, 4))  # fmt: skip
    detail = {
        "crops": [{"image": x["image"], "caption": x["caption"] or x["kind"]} for x in shown[:CARD_CROPS]],
        "images": [{"image": _rel(files, p), "concept": w.chosen[0].concept} for p in thumbs],
        "summaries": [x.label for x in w.summaries],
        "seeds": {
            "run": seed,
            "shuffle": [x.shuffle_seed for x in w.summaries],
            "llm": [x.llm_seed for x in w.summaries] if any(x.source != "offline" for x in w.summaries) else None,
            "images": "image_seed(run, concept, index)",
        },  # fmt: skip
        "template": settings.template,  # evaluate's held-out check reads it here, record by record
        "image_seed": seed,
        "notes": list(w.notes),
        "pooling": settings.pooling,
        "kept_crops": sum(sh.kind == "crop" for sh in w.kept),
        "folder": _rel(files, folder),
    }
    common = {"candidates": [{"concept": c.concept, "score": round(c.score, 6)} for c in w.chosen], "cost": cost,
              "backends": dict(backends), "settings_hash": digest, "detail": detail}  # fmt: skip
    if w.failed:
        detail["failed"] = True  # not done: a re-run tries it again (ExplanationStore.done)
    if not w.ok or not w.chosen:
        return ExplanationRecord.single(w.latent, METHOD, None, reason=scrub(w.reason or "no candidate"), **common)
    return ExplanationRecord.single(w.latent, METHOD, w.chosen[0].concept, **common)


def write_settings_copy(files: RunFiles, settings: DndSettings, digest: str) -> None:
    """``dnd/settings.json``: the settings of the run that wrote the latest records, for people (each record carries
    what a reader needs). Written after records, so it never describes records that do not exist; paths relative to
    the run folder (a moved run reads the same), secrets masked."""
    values = asdict(settings)
    values["run"] = "."
    for key in ("sae", "classifier", "image_cache", "cache_dir"):
        if values.get(key):
            values[key] = relative_to_run(values[key], files.root)
    write_json(files.method_dir(METHOD) / "settings.json",
               scrub_value({**values, "settings_hash": digest, PATHS_KEY: RELATIVE_TO_RUN}))  # fmt: skip


def _generated(folder: Path, w: LatentWork) -> list[Path]:
    """Copies of the best concept's most activating generated images (those in the joint top first)."""
    if not w.chosen:
        return []
    k = w.candidates.index(w.chosen[0].concept)
    order = sorted(range(len(w.acts[k])), key=lambda j: -w.acts[k][j])[:CARD_IMAGES]
    (folder / "generated").mkdir(exist_ok=True)
    out = []
    for n, j in enumerate(order):
        path = folder / "generated" / f"{n:02d}.png"
        shutil.copyfile(w.image_paths[k][j], path)
        out.append(path)
    return out


__all__ = ["CARD_CROPS", "CARD_IMAGES", "METHOD", "latent_dir", "write_latent", "write_settings_copy"]
