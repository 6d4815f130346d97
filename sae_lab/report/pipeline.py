"""The neuron report: one streaming pass of latent statistics over a dataset (``stream``), its analysis
(``analysis``), then the files of ``reports/<run>/`` (``writer``, ``html``), assembled in a staging folder and moved
into place.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import torch

from sae_lab.data.tokens import rank_and_world
from sae_lab.jsonable import to_jsonable
from sae_lab.report import images, writer
from sae_lab.report.analysis import Analysis, analyse, knockout_subset
from sae_lab.report.inputs import open_split
from sae_lab.report.settings import ReportSettings
from sae_lab.report.stream import StatsPass, rows_store, stream_statistics
from sae_lab.run import GT_AUC, RunFiles, check_pair, load_run
from sae_lab.run.files import NEURONS, PATHS_KEY, RELATIVE_TO_RUN, REPORT, relative_to_run
from sae_lab.run.identity import IDENTITY_KEY, identity_of
from sae_lab.run.io import write_json, write_jsonl
from sae_lab.run.leftovers import OWNER, mark_owner, remove_stale

STAGED = (".stats", NEURONS, REPORT, "sprites", "exemplars", ".old")
"""What a report's staging folder holds (besides the owner marker): only such folders are cleaned as leftovers."""


def build_report(
    sae,
    clf,
    run_dir: str | Path,
    settings: ReportSettings | None = None,
    sae_dir: str | Path | None = None,
    sae_metrics: dict | None = None,
    roots: list[Path] | None = None,
) -> dict[str, Any] | None:
    """The report of an SAE (in memory) on a loaded classifier's images, written to ``run_dir``.

    Under torch.distributed every rank streams its share of the images and rank 0 writes the report.

    Args:
        sae: a TopKSAE (its device is where the pass runs).
        clf: the LoadedClassifier it was trained on.
        run_dir: the report folder (``reports/<run>``); files of other stages there are left alone.
        settings: what to read and keep (None: the defaults).
        sae_dir: where the SAE was read from (for the record).
        sae_metrics: the SAE's validation figures (None: from its metadata).
        roots: folders where relative data paths of the classifier are looked up.

    Returns:
        The ``report.json`` dict on rank 0, None on the other ranks.
    """
    t0 = time.perf_counter()
    run_dir, s = Path(run_dir), settings or ReportSettings()
    if RunFiles(run_dir).has_report() and not s.overwrite:
        raise FileExistsError(f"{run_dir} already holds a report ({NEURONS}); pass --overwrite to replace it")
    check_pair(sae, clf, sae_dir)
    dm, dataset, split, primitive_names = open_split(clf, s.data, s.split, s.batch_size, roots or [Path.cwd()])
    net = clf.net.to(sae.device).eval()
    m = sae.cfg.num_latents
    ko = knockout_subset(m, s.knockout_latents)
    staging = writer.staging_dir(run_dir)
    if rank_and_world()[0] == 0:  # staging folders of killed reports (of any run) whose process is gone
        remove_stale(run_dir.parent, contains=STAGED)
    shutil.rmtree(staging, ignore_errors=True)
    mark_owner(staging)  # pid and host: a report running on another machine of a shared folder is left alone
    sp = None
    try:
        sp = stream_statistics(net, sae, dataset, len(clf.class_names), len(primitive_names or []) or None,
                               s.n_exemplars, s.quantile, s.batch_size, ko, s.num_workers,
                               rows_store(len(dataset), m, staging), s.progress)  # fmt: skip
        if sp.stats.num_images == 0:
            raise ValueError(f"no readable image in split {split!r} of {dm.source}")
        if rank_and_world()[0] != 0:
            return None
        t1 = time.perf_counter()
        analysis = analyse(sp, sae, net, ko, s.batch_size)
        sp.stats.close()  # the per-image rows (and their memory-mapped files in staging) are no longer needed
        shutil.rmtree(staging / ".stats", ignore_errors=True)
        t2 = time.perf_counter()
        files = _write_images(staging, analysis, sp, dataset, s.progress)
        t3 = time.perf_counter()
        facts = {
            "run": run_dir.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            # Paths relative to the run folder: it finds its checkpoints when moved or copied with them; the absolute
            # ones are a fallback for a report folder copied alone (load_run checks the identity either way).
            PATHS_KEY: RELATIVE_TO_RUN,
            "sae": {"dir": None if sae_dir is None else relative_to_run(sae_dir, run_dir),
                    "dir_absolute": None if sae_dir is None else str(Path(sae_dir).resolve()), "layer": sae.layer,
                    "d_in": sae.cfg.d_in, "num_latents": m, "k": sae.cfg.k, "classifier": sae.classifier,
                    "metrics": sae_metrics if sae_metrics is not None else (sae.metadata or {}).get("val")},
            "classifier": {"checkpoint": relative_to_run(clf.path, run_dir),
                           "checkpoint_absolute": str(Path(clf.path).resolve()), "fingerprint": clf.fingerprint,
                           "layer": clf.net.layer},
            IDENTITY_KEY: identity_of(sae, clf).to_json(),  # every reader checks its models against this
            "data": {"source": relative_to_run(dm.source, run_dir) if isinstance(dm.source, Path) else str(dm.source),
                     "split": split, "grid": list(sp.grid), "image_size": dm.hparams.image_size,
                     "class_names": list(clf.class_names), "primitive_names": primitive_names},
            "settings": {**s.record(len(ko)), "split": split, "classes_listed": writer.NUM_LISTED},
            "seconds": round(t3 - t0, 2),
            "timings": {"pass": round(sp.seconds, 2), "analysis": round(t2 - t1, 2), "images": round(t3 - t2, 2)},
        }  # fmt: skip
        report = to_jsonable(writer.report_summary(analysis, primitive_names=primitive_names, match_auc=GT_AUC,
                                                   **facts), 6, strict=False)  # fmt: skip
        records = writer.neuron_records(analysis, list(clf.class_names), primitive_names, files, sp.rows)
        write_jsonl(staging / NEURONS, records, ndigits=6)
        write_json(staging / REPORT, report, ndigits=6)
        from sae_lab.report.html import write_index

        write_index(staging, extras_dir=run_dir)
        (staging / OWNER).unlink(missing_ok=True)  # the marker must not move into the run folder
        writer.commit(staging, run_dir, s.overwrite)
        return report
    finally:
        if sp is not None:
            sp.stats.close()
        shutil.rmtree(staging, ignore_errors=True)


def _write_images(staging: Path, a: Analysis, sp: StatsPass, dataset, progress: bool):
    from tqdm.auto import tqdm

    r = a.result
    # Dead latents (never in the Top-K code) get no pictures: the SAE never uses them.
    latents = [i for i in range(len(r.tau)) if r.exemplar_z_max[i, 0] > 0 and not a.dead[i]]
    bar = tqdm(total=len(latents), desc="exemplars", unit="latent", disable=not progress, leave=False)
    load = getattr(dataset, "image", None) or (lambda pos: dataset[pos]["image"])  # the image alone when it can
    try:
        return images.write_exemplar_images(staging, latents, r.exemplar_ids, r.exemplar_z_max, r.exemplar_maps,
                                            sp.grid, load, bar.update)  # fmt: skip
    finally:
        bar.close()


def quickstart_block(report: dict[str, Any]) -> dict[str, Any]:
    """The ``report`` block of ``reports/quickstart/summary.json``."""
    return {key: report[key] for key in ("primitives_recovered", "primitives_total", "latents_matched", "seconds",
                                         "knockout_corr")}  # fmt: skip


def run_report(
    sae_dir: str | Path,
    run_dir: str | Path,
    classifier: str | Path | None = None,
    device: str | None = None,
    **settings,
) -> dict[str, Any]:
    """``python -m sae_lab report``: the neuron report of the exported SAE in ``sae_dir``, written to ``run_dir``.

    Args:
        sae_dir: the SAE's export folder (``cfg.json`` + ``sae.safetensors``).
        run_dir: the report folder.
        classifier: the classifier checkpoint (None: the one recorded in the SAE's ``cfg.json``).
        device: where the pass runs (None: CUDA when available, else CPU).
        **settings: fields of :class:`ReportSettings` (split, data, n_exemplars, quantile, batch_size, num_workers,
            knockout_latents, overwrite, progress).

    Returns:
        The quickstart summary block: primitives_recovered, primitives_total, latents_matched, seconds,
        knockout_corr.

    Raises:
        FileNotFoundError: no SAE / classifier where pointed.
        FileExistsError: ``run_dir`` holds a report and ``overwrite`` is False.
        ValueError: SAE and classifier do not belong together; an empty split; bad settings.
    """
    t0 = time.perf_counter()
    run_dir, s = Path(run_dir), ReportSettings(**settings)
    if RunFiles(run_dir).has_report() and not s.overwrite:
        raise FileExistsError(f"{run_dir} already holds a report ({NEURONS}); pass --overwrite to replace it")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_run(None, sae_dir, classifier, device)
    sae, clf, roots = loaded.sae, loaded.classifier, loaded.roots
    report = build_report(sae, clf, run_dir, s, sae_dir=sae_dir, roots=roots)
    block = quickstart_block(report)
    block["seconds"] = round(time.perf_counter() - t0, 1)
    return block
