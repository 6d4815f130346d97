"""``explain dnd``: Describe-and-Dissect for a run's latents → ``explanations/dnd.jsonl`` and ``dnd/<latent>/``.

Latents are explained ``chunk_size`` at a time, all the work of a chunk shared (:mod:`.engine`); each chunk's
records are appended when it finishes. Resumable: a latent whose record was made with the same settings hash is
skipped, and a killed run started again redoes only the unfinished chunk — regenerating nothing the image cache
holds; a latent whose backend calls failed (its record marked ``detail["failed"]``) is tried again. Reproducible:
caption orders, LLM sampling and image generation are seeded from ``seed`` (recorded in each record's
``detail["seeds"]``, with the prompt template), so the same backends and seed give the same explanations.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sae_lab.explainers.base import open_report
from sae_lab.explainers.dnd.engine import DndEngine
from sae_lab.explainers.dnd.outputs import METHOD, write_latent, write_settings_copy
from sae_lab.explainers.dnd.settings import DndSettings
from sae_lab.run.records import ExplanationRecord, NeuronRecord
from sae_lab.run.store import ExplanationStore

logger = logging.getLogger(__name__)

WORK_KEYS = ("llm_calls", "captions", "caption_failures", "images_generated", "forward_images")


def naming_block(records: Sequence[ExplanationRecord], neurons: dict[int, NeuronRecord]) -> dict[str, Any]:
    """How often the best concept names the latent's ground-truth primitive (strict and lenient, DESIGN.md), over
    the latents whose primitive has image AUC ≥ the ground-truth threshold; rates None without such latents."""
    from sae_lab.evaluate.naming import has_ground_truth, naming

    judged = [naming(r, neurons.get(r.latent)) for r in records if has_ground_truth(neurons.get(r.latent))]
    judged = [(a or 0.0, b or 0.0) for a, b in judged]  # a latent without an explanation names nothing
    n = len(judged)
    return {"strict": round(sum(a for a, _ in judged) / n, 4) if n else None,
            "lenient": round(sum(b for _, b in judged) / n, 4) if n else None, "n": n}  # fmt: skip


def run_dnd(settings: DndSettings | None = None, parts: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Explains the chosen latents with DnD, appending to ``explanations/dnd.jsonl``.

    Args:
        settings: The settings (or give their fields as keyword arguments).
        parts: Ready-made pieces for :class:`DndEngine` instead of the settings' specs (``llm``, ``captioner``,
            ``perception``, ``images``, ``loaded``, ``probe``, ``image_cache``): tests and benchmarks.

    Returns:
        The ``summary.json`` block: ``latents``, ``explained``, ``missing``, ``seconds``, this call's work
        (``llm_calls``, ``captions``, ``caption_failures``, ``images_generated``, ``forward_images``) and
        ``gt_named`` (strict, lenient, n).

    Raises:
        ValueError: a bad setting or unknown backend spec (naming the field), a latent the report lacks.
        FileNotFoundError: no report, SAE or classifier where pointed.
    """
    s = settings if settings is not None else DndSettings(**kwargs)
    s.check()
    t0 = time.perf_counter()
    files, neurons, latents = open_report(s)
    digest = s.settings_hash()
    store = ExplanationStore(files, METHOD)
    todo = [i for i in latents if s.overwrite or i not in store.done(digest)]
    totals: Counter = Counter()
    if todo:
        engine = DndEngine(s, **(parts or {}))
        setup = (time.perf_counter() - t0) / len(todo)
        try:
            for start in range(0, len(todo), s.chunk_size):
                chunk = todo[start : start + s.chunk_size]
                t1 = time.perf_counter()
                works = engine.explain(chunk)
                seconds = (time.perf_counter() - t1) / len(chunk) + setup
                store.append([write_latent(files, w, engine.probe.rows, s, seconds, engine.backends, digest)
                              for w in works])  # fmt: skip
                if start == 0:  # after records: the template each record carries is what evaluate reads
                    write_settings_copy(files, s, digest)
                logger.info("dnd: %d/%d latents explained", min(start + s.chunk_size, len(todo)), len(todo))
            totals = engine.totals
        finally:
            engine.close()
            store.close()
    latest = store.latest()
    records = [latest[i] for i in latents if i in latest]
    explained = sum(r.ok for r in records)
    block: dict[str, Any] = {"latents": len(latents), "explained": explained, "missing": len(latents) - explained,
                             "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
    block.update({k: int(totals[k]) for k in WORK_KEYS})
    block["gt_named"] = naming_block(records, {n.latent: n for n in neurons})
    return block


def run(settings: DndSettings) -> dict[str, Any]:
    """The registry's entry point (:data:`~sae_lab.explainers.dnd.EXPLAINER`)."""
    return run_dnd(settings)


__all__ = ["WORK_KEYS", "naming_block", "run", "run_dnd"]
