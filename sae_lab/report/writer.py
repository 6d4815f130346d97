"""Files of the neuron report: ``neurons.jsonl`` and ``report.json`` records, and moving a finished report in.

Everything is first written into a staging folder beside the run folder (``reports/.<run>.tmp-<pid>``) and
moved into place by :func:`commit`, ``neurons.jsonl`` (the marker of a finished report) after the rest. The
images are :mod:`sae_lab.report.images`'; file names are :class:`~sae_lab.run.RunFiles`'.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from sae_lab.run.files import EXEMPLARS, INDEX, NEURONS, REPORT, SPRITES, RunFiles
from sae_lab.run.records import NEURONS_SCHEMA

NUM_LISTED = 5
"""Classes per latent in ``top_classes`` / ``anti_classes`` and in the stats block."""


def staging_dir(run_dir: Path) -> Path:
    """Where a report is assembled before :func:`commit` moves it into ``run_dir``."""
    return run_dir.parent / f".{run_dir.name}.tmp-{os.getpid()}"


def commit(staging: Path, run_dir: Path, overwrite: bool) -> None:
    """Move a finished report from ``staging`` into ``run_dir``, leaving unrelated files there alone.

    The old report's ``neurons.jsonl`` and ``index.html`` go first and the new ``neurons.jsonl`` goes last, so an
    interruption never leaves a folder that looks like a complete report.

    Raises:
        FileExistsError: ``run_dir`` already holds a report and ``overwrite`` is False.
    """
    if RunFiles(run_dir).has_report() and not overwrite:
        raise FileExistsError(f"{run_dir} already holds a report ({NEURONS}); pass --overwrite to replace it")
    if not run_dir.exists():
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, run_dir)
        return
    for name in (NEURONS, INDEX):
        (run_dir / name).unlink(missing_ok=True)
    trash = staging / ".old"
    trash.mkdir(exist_ok=True)
    for name in (SPRITES, EXEMPLARS):
        if (run_dir / name).exists():
            os.replace(run_dir / name, trash / name)
        if (staging / name).exists():
            os.replace(staging / name, run_dir / name)
    for name in (REPORT, INDEX, NEURONS):
        os.replace(staging / name, run_dir / name)
    shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------- records
def _class_rows(a, classes: Tensor, class_names: list[str]) -> list[list[dict[str, Any]]]:
    """Per latent, the entries of the given (M, k) classes: class, index, S, pmi, delta, delta_measured, w, n_on."""
    r = a.result
    cols = {
        "S": r.score.gather(1, classes).tolist(),
        "pmi": r.pmi.gather(1, classes).tolist(),
        "delta": r.knockout.gather(1, classes).tolist(),
        "delta_measured": a.measured.gather(1, classes).tolist(),
        "w": r.logit_lens.gather(1, classes).tolist(),
        "n_on": r.class_on_counts.gather(1, classes).tolist(),
    }
    out = []
    for i, row in enumerate(classes.tolist()):
        entries = []
        for j, c in enumerate(row):
            entry = {"class": class_names[c], "index": c}
            entry.update({key: col[i][j] for key, col in cols.items()})
            entries.append(entry)
        out.append(entries)
    return out


def neuron_records(
    a,
    class_names: list[str],
    primitive_names: list[str] | None,
    files: Mapping[int, tuple[str, list[str]]],
    rows: Tensor,
) -> list[dict[str, Any]]:
    """One ``neurons.jsonl`` object per latent (the schema is documented in the README, "Neuron report")."""
    from sae_lab.stats import latent_summary

    r = a.result
    top, anti = _class_rows(a, a.top, class_names), _class_rows(a, a.anti, class_names)
    ex_ids, ex_z, ex_labels = r.exemplar_ids.tolist(), r.exemplar_z_max.tolist(), r.exemplar_labels.tolist()
    records = []
    for i in range(len(r.tau)):
        sprite_file, images = files.get(i, (None, []))
        kept = [j for j, (p, z) in enumerate(zip(ex_ids[i], ex_z[i])) if p >= 0 and z > 0]
        exemplars = [
            {"image": images[n] if n < len(images) else None, "id": int(rows[ex_ids[i][j]]), "z_max": ex_z[i][j],
             "label": ex_labels[i][j], "class": class_names[ex_labels[i][j]]}
            for n, j in enumerate(kept)
        ]  # fmt: skip
        block = latent_summary(r, i, class_names, primitive_names, NUM_LISTED)
        # The report's frequency is the SAE's own (Top-K code) firing; the dense-code rates stay alongside.
        block.update(frequency=a.frequency[i].item(), image_frequency=a.image_frequency[i].item(),
                     dense_frequency=r.frequency[i].item(), dead=bool(a.dead[i]))  # fmt: skip
        records.append(
            {
                "latent": i,
                "frequency": a.frequency[i].item(),
                "image_frequency": a.image_frequency[i].item(),
                "dense_frequency": r.frequency[i].item(),
                "dense_image_frequency": r.image_frequency[i].item(),
                "mean_act": r.mean_act[i].item(),
                "tau": r.tau[i].item(),
                "n_on": int(r.n_on[i]),
                "mean_on_zavg": r.mean_on_zavg[i].item(),
                "dead": bool(a.dead[i]),
                "top_classes": top[i],
                "anti_classes": anti[i],
                "monosemanticity": r.monosemanticity[i].item(),
                "exemplars": exemplars,
                "sprite": sprite_file,
                "ground_truth": _ground_truth(a, i, primitive_names),
                "stats_block": block,
                "schema": NEURONS_SCHEMA,
            }
        )
    return records


def _ground_truth(a, i: int, primitive_names: list[str] | None) -> dict[str, Any] | None:
    if a.match is None or int(a.match.primitive[i]) < 0:
        return None
    names = primitive_names or [str(p) for p in range(a.result.image_auc.shape[1])]
    return {
        "primitive": names[int(a.match.primitive[i])],
        "image_auc": a.match.image_auc[i].item(),
        "token_auc": a.match.token_auc[i].item(),
        "all": dict(zip(names, a.result.image_auc[i].tolist())),
    }


def frequency_histogram(frequency: Tensor, dead: Tensor, num_tokens: int, step: float = 0.25) -> dict[str, Any]:
    """Histogram of log10(frequency) of the live latents on fixed ``step``-wide bins; dead latents counted apart."""
    live = frequency[~dead & (frequency > 0)].double().log10()
    lo = math.floor(math.log10(1 / max(1, num_tokens)) / step) * step
    edges = np.arange(lo, step / 2, step)
    if len(edges) < 2:
        edges = np.array([lo, 0.0])
    counts, _ = np.histogram(live.clamp(edges[0], edges[-1]).numpy(), bins=edges)
    return {"log10_edges": edges.round(4).tolist(), "counts": counts.tolist(), "dead": int(dead.sum())}


def report_summary(a, *, primitive_names: list[str] | None, match_auc: float, **facts) -> dict[str, Any]:
    """``report.json``: the run's facts (``facts``) plus the figures derived from the analysis."""
    r = a.result
    live = ~a.dead
    out: dict[str, Any] = {"version": NEURONS_SCHEMA, **facts}
    out.update(
        num_images=r.num_images,
        num_tokens=r.num_tokens,
        num_latents=len(r.tau),
        live_latents=int(live.sum()),
        dead_frac=float(a.dead.double().mean()),
        dead_latents=a.dead.nonzero().squeeze(1).tolist(),
        primitives_recovered=None,
        primitives_total=None,
        latents_matched=None,
        primitives=None,
    )
    if a.recovered is not None:
        names = primitive_names or [str(p) for p in range(len(a.recovered.latent))]
        table = []
        for p, name in enumerate(names):
            latent = int(a.recovered.latent[p])
            token = r.token_auc[latent, p].item() if latent >= 0 and r.token_auc is not None else None
            table.append({"primitive": name, "latent": latent if latent >= 0 else None,
                          "image_auc": a.recovered.auc[p].item(), "token_auc": token,
                          "recovered": bool(a.recovered.recovered[p])})  # fmt: skip
        out.update(
            primitives_recovered=int(a.recovered.recovered.sum()),
            primitives_total=len(names),
            latents_matched=int((live & (a.match.image_auc.nan_to_num(nan=-1.0) >= match_auc)).sum()),
            primitives=table,
        )
    k = a.knockout
    out["knockout"] = {
        "corr": None if k is None else k.correlation,
        "corr_dataset": a.knockout_corr_dataset,
        "pairs": 0 if k is None else len(k.latent),
        "latents": 0 if k is None else len(k.latent.unique()),
    }
    out["knockout_corr"] = out["knockout"]["corr"]
    out["frequency_histogram"] = frequency_histogram(a.frequency, a.dead, r.num_tokens)
    return out
