"""``evaluate``: every explanation of a run scored on the same latents with held-out evidence (DESIGN.md,
"Evaluation"). :func:`evaluate` computes ``evaluation.json``; :func:`run_evaluate` also writes it, the ``evaluation``
block of ``summary.json`` and the report page's section.

Resumable and incremental: a scored row is cached under its method, latent, explanation (text, terms, bias,
settings hash) and the scoring settings, so a re-run after a new method lands scores only the new rows; generated
images and their activations are cached per (concept, template, generator) across methods and runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sae_lab.evaluate.heldout import HeldoutGenerator, check_heldout, recorded_generation
from sae_lab.evaluate.metrics import method_table
from sae_lab.evaluate.naming import has_ground_truth, naming
from sae_lab.evaluate.rows import (
    BASELINES,
    Explanations,
    baselines,
    check_same_sae,
    is_sketch_world,
    sample_latents,
    select,
    vocabulary,
)
from sae_lab.evaluate.settings import EvaluateSettings
from sae_lab.evaluate.simulate import PresenceTable, make_simulator, simulate
from sae_lab.evaluate.table import format_table, summary_block
from sae_lab.run import (
    GT_AUC,
    JsonlAppender,
    NeuronRecord,
    RunFiles,
    explanation_methods,
    load_run,
    read_explanations,
    read_json,
    read_jsonl,
    read_neurons,
    write_json,
)
from sae_lab.run.summary import update_summary
from sae_lab.stats.concept import concept_scores

logger = logging.getLogger(__name__)

EXPLAINERS_HINT = "labels, line, le, dnd or patches"


@dataclass
class Work:
    """What one evaluation computed and what it found cached."""

    rows_scored: int = 0
    rows_cached: int = 0
    images_generated: int = 0
    cache_hits: int = 0
    """CoSy requests (method × latent) served by images drawn before (earlier in the run or on disk)."""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def run_folder(run: str) -> RunFiles:
    """``reports/<name>`` for a bare run name, else the folder given."""
    path = Path(run)
    return RunFiles(Path("reports") / path if not path.is_dir() and len(path.parts) == 1 else path)


def row_key(scoring: str, record, neuron: NeuronRecord | None) -> str:
    """Cache key of one row: the scoring settings, the explanation and the latent's ground truth."""
    gt = [neuron.gt_primitive, neuron.gt_auc] if neuron is not None else None
    blob = [scoring, record.method, record.latent, record.text, [[t.concept, t.weight] for t in record.terms],
            record.bias, record.settings_hash, gt, GT_AUC]  # fmt: skip
    return hashlib.sha1(json.dumps(blob, default=str).encode()).hexdigest()


def check_simulator(spec: str, explanations: Explanations) -> None:
    """Refuses a simulator an explainer used for perception (the sketch world's annotations excepted: they are
    the ground truth the simulator is meant to be there, DESIGN.md)."""
    if spec.strip() == "offline":
        return
    for method, records in explanations.items():
        if any(str(r.backends.get("perception", "")).strip() == spec.strip() for r in records.values()):
            raise ValueError(f"simulator {spec!r} is the perception backend {method} explained with: give another one")


def _score(todo: Explanations, s: EvaluateSettings, loaded, files: RunFiles, cache_dir: Path,
           neurons: Mapping[int, NeuronRecord], work: Work) -> list[dict[str, Any]]:  # fmt: skip
    """CoSy, simulation and naming of the rows in ``todo``."""
    from sae_lab.explainers.line.scoring import LatentScorer
    from sae_lab.explainers.probe import probe_set

    t0 = time.perf_counter()
    probe = probe_set(loaded, files, n=s.probe_images, seed=s.probe_seed, batch_size=max(s.batch_size, 64))
    work.extra["probe_seconds"] = round(time.perf_counter() - t0, 3)
    heldout = probe.partition(s.probe_seed)["heldout"]
    device = next(loaded.sae.parameters()).device
    scorer = LatentScorer(loaded.classifier.net, loaded.sae, loaded.classifier.image_size, device, s.batch_size)
    gen = HeldoutGenerator(s.generator, s.template, s.seed_start, s.n_images, cache_dir,
                           loaded.classifier.image_size)  # fmt: skip

    # CoSy: each concept's images drawn and scored once, for all latents that ask for it.
    wants: dict[str, list[tuple[str, int]]] = {}
    for method, records in todo.items():
        for latent, record in records.items():
            wants.setdefault(record.main_concept, []).append((method, latent))
    t0 = time.perf_counter()
    acts = gen.activations(list(wants), scorer, loaded.sae_id)
    cosy: dict[tuple[str, int], tuple[float | None, float | None]] = {}
    for concept, asks in wants.items():
        if acts[concept] is None:
            continue
        lats = [lat for _, lat in asks]
        sc = concept_scores(acts[concept][:, lats], probe.z_max[:, lats])
        for j, key in enumerate(asks):
            cosy[key] = (float(sc.auc[j]), float(sc.mad[j]))
    work.images_generated += gen.generated
    # every request for a drawing beyond its first drawing is served from the cache
    work.cache_hits += sum(len(a) for c, a in wants.items() if acts[c] is not None) - len(gen.drawn)

    work.extra["cosy_seconds"] = round(time.perf_counter() - t0, 3)
    work.extra["concepts"] = len(wants)
    work.extra["drawings"] = len({gen.drawing(c) for c in wants} - {None})

    t0 = time.perf_counter()
    if s.simulator.strip() == "offline" and probe.primitives is None:
        logger.warning("the offline simulator knows only the class labels of this data: give --simulator hf:<id>")
    table = PresenceTable(make_simulator(s.simulator), [probe.pil(int(i)) for i in heldout])
    rows = []
    for method, records in todo.items():
        r = simulate(records, table, probe, heldout)
        for latent, record in records.items():
            auc, mad = cosy.get((method, latent), (None, None))
            strict, lenient = naming(record, neurons.get(latent))
            rows.append({"latent": latent, "method": method, "text": record.text, "cosy_auc": auc, "cosy_mad": mad,
                         "simulation_r": r.get(latent), "named_strict": strict, "named_lenient": lenient,
                         "concept": record.main_concept, "drawable": gen.drawable(record.main_concept)})  # fmt: skip
    work.extra["simulation_seconds"] = round(time.perf_counter() - t0, 3)
    work.extra["heldout_images"] = len(heldout)
    work.extra["probe_images"] = len(probe)
    return rows


def evaluate(settings: EvaluateSettings | None = None, work: Work | None = None) -> dict[str, Any]:
    """The evaluation of a run (the content of ``evaluation.json``); writes only its caches.

    Raises:
        FileNotFoundError: no report, or no explanations (naming what to run first).
        ValueError: explanations from another SAE; a held-out template or seed an explainer used; bad settings.
    """
    s = settings or EvaluateSettings()
    s.check()
    work = work if work is not None else Work()
    t0 = time.perf_counter()
    files = run_folder(s.run)
    neurons = read_neurons(files)
    methods = explanation_methods(files)
    if not methods:
        raise FileNotFoundError(
            f"no explanations in {files.explanations_dir}: explain some latents first, e.g. "
            f"`python -m sae_lab explain labels --run {files.root}` (methods: {EXPLAINERS_HINT})"
        )
    clash = sorted(set(methods) & set(BASELINES))
    if clash:
        raise ValueError(f"explanations/{clash[0]}.jsonl takes the name of a baseline ({', '.join(BASELINES)})")
    explanations = read_explanations(files, methods)
    loaded = load_run(files.root, s.sae, s.classifier, s.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    line_params = read_json(files.line_dir / "params.json", default=None)
    check_same_sae(explanations, loaded.sae_id, str(loaded.paths.sae_dir), line_params)
    check_heldout(s.template, s.seed_start, s.n_images, recorded_generation(files, explanations))
    check_simulator(s.simulator, explanations)

    by_latent = {n.latent: n for n in neurons}
    latents = sample_latents(neurons, s.n_latents, s.latents_seed, s.latents)
    sketch = is_sketch_world(neurons)
    every = {**explanations, **baselines(by_latent, latents, vocabulary(loaded.classifier.class_names, sketch),
                                         s.latents_seed, sketch)}  # fmt: skip
    chosen, missing = select(every, latents)

    cache_dir = Path(s.cache_dir) if s.cache_dir else files.method_dir("evaluate")
    scoring = s.scoring_hash(loaded.sae_id)
    cached = {} if s.overwrite else {o["key"]: o["row"] for o in read_jsonl(cache_dir / "rows.jsonl") if "key" in o}
    rows, todo, keys = [], {}, {}
    for method, records in chosen.items():
        for latent, record in records.items():
            keys[(method, latent)] = key = row_key(scoring, record, by_latent.get(latent))
            if key in cached:
                rows.append(cached[key])
            else:
                todo.setdefault(method, {})[latent] = record
    work.rows_cached = len(rows)
    if todo:
        if s.progress:
            print(f"[evaluate] scoring {sum(map(len, todo.values()))} rows of {len(todo)} methods "
                  f"({len(rows)} cached)", flush=True)  # fmt: skip
        new = _score(todo, s, loaded, files, cache_dir, by_latent, work)
        with JsonlAppender(cache_dir / "rows.jsonl") as out:
            out.extend({"key": keys[(r["method"], r["latent"])], "row": r} for r in new)
        rows += new
        work.rows_scored = len(new)
    order = {m: i for i, m in enumerate(every)}
    rows.sort(key=lambda r: (order[r["method"]], r["latent"]))
    gt_latents = {k for k in latents if has_ground_truth(by_latent.get(k))} if sketch else None
    table = {}
    for method in every:
        mine = [r for r in rows if r["method"] == method]
        table[method] = method_table(mine, missing[method], [rec.cost for rec in chosen[method].values()], gt_latents)
    work.seconds = time.perf_counter() - t0
    gt = len(gt_latents or ())
    return {"latents": latents, "seed": s.latents_seed, "generator": HeldoutGenerator(
                s.generator, s.template, s.seed_start, s.n_images, cache_dir).describe(),
            "simulator": s.simulator, "gt_latents": gt, "gt_auc": GT_AUC if sketch else None,
            "methods": table, "rows": rows,
            "work": {"rows_scored": work.rows_scored, "rows_cached": work.rows_cached,
                     "images_generated": work.images_generated, "cache_hits": work.cache_hits,
                     "seconds": round(work.seconds, 3), **work.extra}}  # fmt: skip


def run_evaluate(settings: EvaluateSettings | None = None) -> dict[str, Any]:
    """``python -m sae_lab evaluate``: :func:`evaluate`, then writes ``evaluation.json`` (or ``settings.out``).

    Without ``out``: also the ``evaluation`` block of ``summary.json`` and the report page (when there is one).
    With ``out``: only that file; the run's report and summary are left untouched.

    Returns:
        The ``summary.json`` block (``latents``, ``gt_latents``, ``methods``: per method the metric means,
        ``seconds``).
    """
    s = settings or EvaluateSettings()
    evaluation = evaluate(s)
    block = summary_block(evaluation)
    if s.out:
        write_json(s.out, evaluation)
    else:
        files = run_folder(s.run)
        write_json(files.evaluation, evaluation)
        update_summary(files.summary, "evaluation", block)
        _refresh_report(files)
    if s.progress:
        w = evaluation["work"]
        print(format_table(evaluation), flush=True)
        print(f"[evaluate] {len(evaluation['latents'])} latents ({evaluation['gt_latents']} with ground truth), "
              f"{w['rows_scored']} rows scored, {w['rows_cached']} cached, {w['images_generated']} images drawn, "
              f"{w['seconds']:.1f} s -> {s.out or run_folder(s.run).evaluation}", flush=True)  # fmt: skip
    return block


def _refresh_report(files: RunFiles) -> None:
    """Re-renders the report page (it shows the evaluation) when there is a report; a convenience, never fatal."""
    if not files.has_report() or not files.report.is_file():
        return
    try:
        from sae_lab.report.html import write_index

        write_index(files.root)
    except Exception as exc:  # noqa: BLE001 -- evaluation.json is written; the page is a convenience
        logger.warning("could not re-render %s: %s", files.index, exc)


__all__ = ["EXPLAINERS_HINT", "Work", "check_simulator", "evaluate", "row_key", "run_evaluate", "run_folder"]
