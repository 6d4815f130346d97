"""``explain le``: LE(Label) and LE(VLM) for a run's latents → ``explanations/le-label.jsonl``, ``le-vlm.jsonl``.

One probe set (cached), one concept matrix per variant (LE(VLM)'s presences from one perception call over the
probe images, cached by the backend), one batched fit for all latents still to do. Resumable: a latent whose
record was made with the same settings is skipped; the summary block covers every requested latent's latest
record either way.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch

from sae_lab.explainers.base import open_report
from sae_lab.explainers.le.concepts import (
    ConceptMatrix,
    filter_concepts,
    label_concepts,
    read_concept_file,
    vlm_concept_set,
)
from sae_lab.explainers.le.explain import LeOptions, LinearExplanation, explain_latents
from sae_lab.explainers.le.settings import VARIANTS, LeSettings
from sae_lab.run.files import GT_AUC, RunFiles
from sae_lab.run.records import Cost, ExplanationRecord, NeuronRecord
from sae_lab.run.store import ExplanationStore

logger = logging.getLogger(__name__)


def vlm_presence(probe, settings: LeSettings) -> tuple[list[str], torch.Tensor, str]:
    """LE(VLM)'s concept texts and (N, C) presences on the probe images, and the backend's name.

    Raises:
        ImportError: the perception backends are not installed.
    """
    from sae_lab.backends.perception import make_perception

    extra = read_concept_file(settings.concept_file) if settings.concept_file else []
    names = vlm_concept_set(probe.class_names, probe.primitive_names is not None, extra)
    backend = make_perception(settings.perception, device=settings.device or "auto")
    try:
        images = [probe.pil(i) for i in range(len(probe))]
        presence = torch.as_tensor(backend.presence(images, names), dtype=torch.float32)
    finally:
        backend.close()
    if presence.shape != (len(probe), len(names)):
        raise ValueError(f"perception {settings.perception!r} gave presences of shape {tuple(presence.shape)}, "
                         f"expected {(len(probe), len(names))}")  # fmt: skip
    return names, presence.clamp(0, 1), settings.perception


def concept_matrix(variant: str, probe, settings: LeSettings) -> tuple[ConceptMatrix, dict[str, Any], int]:
    """A variant's filtered concepts, its backends for the record, and the images a VLM scored."""
    if variant == "label":
        names, presence = label_concepts(probe.labels, probe.class_names)
        return filter_concepts(names, presence), {"concepts": "labels"}, 0
    names, presence, spec = vlm_presence(probe, settings)
    matrix = filter_concepts(names, presence, settings.min_top5, settings.min_std)
    return matrix, {"perception": spec}, len(probe)


def _record(latent: int, method: str, exp: LinearExplanation, cost: Cost, backends: dict, digest: str,
            detail: dict) -> ExplanationRecord:  # fmt: skip
    detail = {"select_r": exp.select_r, "heldout_r": exp.heldout_r, **detail}
    return ExplanationRecord(latent, method, exp.text, terms=exp.terms, bias=exp.bias, candidates=exp.candidates,
                             cost=cost, backends=backends, settings_hash=digest, reason=exp.reason,
                             detail=detail)  # fmt: skip


def _mean_se(values: list[float]) -> dict[str, float | int | None]:
    n = len(values)
    if n == 0:
        return {"mean": None, "se": None, "n": 0}
    mean = sum(values) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else None
    return {"mean": round(mean, 4), "se": None if se is None else round(se, 4), "n": n}


def variant_block(records: list[ExplanationRecord], neurons: dict[int, NeuronRecord]) -> dict[str, Any]:
    """A variant's figures over the given records: explained, r on select and held-out images, length, and how
    often the largest term names the latent's ground-truth primitive (latents with image AUC ≥ ``GT_AUC``)."""
    from sae_lab.data.world import primitives_in_text

    ok = [r for r in records if r.ok]
    sel = [r.detail["select_r"] for r in ok if r.detail.get("select_r") is not None]
    held = [r.detail["heldout_r"] for r in ok if r.detail.get("heldout_r") is not None]
    gt = [(r, neurons[r.latent].gt_primitive) for r in records if r.latent in neurons
          and neurons[r.latent].gt_primitive and (neurons[r.latent].gt_auc or 0) >= GT_AUC]  # fmt: skip
    named = sum(bool(r.ok and p in primitives_in_text(r.main_concept or "")) for r, p in gt)
    return {
        "explained": len(ok),
        "missing": len(records) - len(ok),
        "select_r": _mean_se(sel),
        "heldout_r": _mean_se(held),
        "mean_terms": round(sum(len(r.terms) for r in ok) / len(ok), 2) if ok else None,
        "gt_named": {"rate": round(named / len(gt), 4) if gt else None, "n": len(gt)},
    }


def run_le(settings: LeSettings | None = None, **kwargs: Any) -> dict[str, Any]:
    """``explain le``: explains the chosen latents with each asked LE variant, appending to their files.

    Args:
        settings: the settings (or give their fields as keyword arguments).

    Returns:
        The summary block: ``latents``, ``seconds``, ``vlm_images`` (images a perception backend scored in this
        call) and per variant ``label`` / ``vlm``: explained, missing, select_r and heldout_r (mean, se, n),
        mean_terms, gt_named.

    Raises:
        ValueError: a bad setting (naming the field), a latent the report lacks.
        FileNotFoundError: no report, SAE or classifier where pointed.
        ImportError: LE(VLM) without the perception backends.
    """
    s = settings if settings is not None else LeSettings(**kwargs)
    s.check()
    t0 = time.perf_counter()
    files, neurons, latents = open_report(s)
    variants = s.variant_list()
    stores = {v: ExplanationStore(files, VARIANTS[v]) for v in variants}
    hashes = {v: s.variant_hash(v) for v in variants}
    done = {v: set() if s.overwrite else stores[v].done(hashes[v]) for v in variants}
    todo = {v: [i for i in latents if i not in done[v]] for v in variants}
    vlm_images = 0
    if any(todo.values()):
        vlm_images = _explain(s, files, todo, stores, hashes)
    by_latent = {n.latent: n for n in neurons}
    block: dict[str, Any] = {"latents": len(latents), "seconds": 0.0, "vlm_images": vlm_images}
    for v in variants:
        latest = stores[v].latest()
        block[v] = variant_block([latest[i] for i in latents if i in latest], by_latent)
        stores[v].close()
    block["seconds"] = round(time.perf_counter() - t0, 2)
    return block


def _explain(s: LeSettings, files: RunFiles, todo: dict[str, list[int]], stores: dict, hashes: dict) -> int:
    """Fits the variants' latents still to do and appends their records; returns the images a VLM scored."""
    from sae_lab.explainers.probe import probe_set
    from sae_lab.run.load import load_run

    t0 = time.perf_counter()
    device = s.device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_run(s.run, s.sae, s.classifier, device=device)
    probe = probe_set(loaded, files, split=s.split, n=s.n_images, seed=s.seed, batch_size=s.batch_size)
    parts = probe.partition(s.seed)
    targets = probe.activations(s.pooling)
    options = LeOptions(s.lam, s.alpha, s.max_concepts, s.min_gain, s.width)
    shared = time.perf_counter() - t0  # the probe set serves every variant
    scored = 0
    for v, latents in todo.items():
        if not latents:
            continue
        t1 = time.perf_counter()
        matrix, backends, images = concept_matrix(v, probe, s)
        scored += images
        explained = explain_latents(matrix.presence, matrix.names, targets[:, latents], parts, options)
        seconds = (time.perf_counter() - t1 + shared / len([x for x in todo.values() if x])) / len(latents)
        cost = Cost(vlm_images=round(images / len(latents)), seconds=round(seconds, 4))
        detail = {"pooling": s.pooling, "concepts": len(matrix.names),
                  "images": {k: len(idx) for k, idx in parts.items()}}  # fmt: skip
        backends = {**backends, "sae": loaded.sae_id}  # evaluate refuses explanations of another SAE
        stores[v].append([_record(i, VARIANTS[v], e, cost, backends, hashes[v], detail)
                          for i, e in zip(latents, explained)])  # fmt: skip
        logger.info("%s: %d latents, %d concepts (%d dropped), %.1fs", VARIANTS[v], len(latents), len(matrix.names),
                    len(matrix.dropped), time.perf_counter() - t1)  # fmt: skip
    return scored


def run(settings: LeSettings) -> dict[str, Any]:
    """The registry's entry point (:data:`~sae_lab.explainers.le.EXPLAINER`)."""
    return run_le(settings)


__all__ = ["concept_matrix", "run", "run_le", "variant_block", "vlm_presence"]
