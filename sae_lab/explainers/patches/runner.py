"""``explain patches``: occlusion patches, an LLM vocabulary per class, and a perception backend naming the patches
→ ``explanations/patches.jsonl`` and ``reports/<run>/patches/<latent>/`` (occlusion maps and patches).

Shared work: the probe set is one pass over the images; the vocabulary is asked once per class (cached on disk);
latents go in chunks whose top images are occluded once for all of them (:mod:`.occlusion`); each distinct patch
of a chunk is scored against the whole vocabulary in one perception call. Records are appended after each chunk,
so a killed run continues with the next chunk; a re-run skips latents explained with the same settings, except
those whose LLM requests all failed (marked ``detail["failed"]``, no label), which it tries again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from sae_lab.explainers.base import open_report
from sae_lab.explainers.patches.ablation import ablation_drops, top_drops
from sae_lab.explainers.patches.cache import DropCache
from sae_lab.explainers.patches.explain import ChunkInputs, explain_chunk
from sae_lab.explainers.patches.settings import PatchSettings
from sae_lab.explainers.patches.vocabulary import class_vocabularies
from sae_lab.run.files import RunFiles
from sae_lab.run.records import Cost, ExplanationRecord
from sae_lab.run.store import ExplanationStore

logger = logging.getLogger(__name__)

METHOD = "patches"
NEVER_FIRES = "latent never fires on the probe images"


def _mean_se(values: list[float]) -> dict[str, float | int | None]:
    n = len(values)
    if n == 0:
        return {"mean": None, "se": None, "n": 0}
    mean = sum(values) / n
    se = (sum((v - mean) ** 2 for v in values) / (n - 1) / n) ** 0.5 if n > 1 else None
    return {"mean": round(mean, 4), "se": None if se is None else round(se, 4), "n": n}


def summary_block(records: list[ExplanationRecord], neurons: dict) -> dict[str, Any]:
    """Figures over the given records: explained, ground-truth naming (strict / lenient) and the patch boxes'
    IoU with the ground-truth primitive (latents with image AUC ≥ ``GT_AUC``)."""
    from sae_lab.evaluate.naming import naming

    named = [naming(r, neurons.get(r.latent)) for r in records]
    strict = [s for s, _ in named if s is not None]
    lenient = [v for _, v in named if v is not None]
    iou = [r.detail["gt_iou"] for r in records if r.detail.get("gt_iou") is not None]
    return {"explained": sum(r.ok for r in records), "missing": sum(not r.ok for r in records),
            "named_strict": _mean_se(strict), "named_lenient": _mean_se(lenient), "gt_iou": _mean_se(iou)}  # fmt: skip


def run_patches(settings: PatchSettings | None = None, **kwargs: Any) -> dict[str, Any]:
    """``explain patches``: explains the chosen latents, appending to ``explanations/patches.jsonl``.

    Args:
        settings: the settings (or give their fields as keyword arguments).

    Returns:
        The summary block: ``latents``, ``seconds``, this call's ``forward_images``, ``vlm_images`` and
        ``llm_calls``, and over every requested latent's latest record: explained, missing, named_strict,
        named_lenient, gt_iou (mean, se, n).

    Raises:
        ValueError: a bad setting (naming the field), an unknown backend spec, a latent the report lacks.
        FileNotFoundError: no report, SAE or classifier where pointed.
    """
    s = settings if settings is not None else PatchSettings(**kwargs)
    s.check()
    t0 = time.perf_counter()
    files, neurons, latents = open_report(s)
    digest = s.settings_hash()
    work = {"forward_images": 0, "vlm_images": 0, "llm_calls": 0}
    with ExplanationStore(files, METHOD) as store:
        done = set() if s.overwrite else store.done(digest)
        todo = [i for i in latents if i not in done]
        if todo:
            work = _explain(s, files, todo, store, digest, {n.latent: n for n in neurons})
        latest = store.latest()
    by_latent = {n.latent: n for n in neurons}
    block: dict[str, Any] = {"latents": len(latents), "seconds": 0.0, **work}
    block.update(summary_block([latest[i] for i in latents if i in latest], by_latent))
    block["seconds"] = round(time.perf_counter() - t0, 2)
    return block


def _explain(s: PatchSettings, files: RunFiles, todo: list[int], store: ExplanationStore, digest: str,
             neurons: dict) -> dict[str, int]:  # fmt: skip
    """Explains ``todo`` chunk by chunk; returns this call's work counters."""
    from sae_lab.backends.perception import make_perception
    from sae_lab.explainers.patches.outputs import load_masks
    from sae_lab.explainers.probe import probe_set
    from sae_lab.run.load import load_run

    t0 = time.perf_counter()
    device = s.device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_run(s.run, s.sae, s.classifier, device=device)
    s.check_image(int(loaded.classifier.image_size))
    perception = make_perception(s.perception, device=device)  # an unknown spec fails before any work
    try:
        probe = probe_set(loaded, files, split=s.split, n=s.n_images, seed=s.seed, batch_size=s.batch_size)
        s.check_image(int(probe.images.shape[-1]))
        parts = probe.partition(s.seed)
        pool = torch.cat([parts["fit"], parts["select"]]).sort().values  # held-out images judge the ablation
        tops = {i: probe.top_images(i, s.top_images, pooling="max", among=pool).tolist() for i in todo}
        firing = [i for i in todo if tops[i]]
        silent = [i for i in todo if not tops[i]]
        backends = {"llm": s.llm, "perception": s.perception, "sae": loaded.sae_id}
        if silent:
            store.append([ExplanationRecord.single(i, METHOD, None, reason=NEVER_FIRES, settings_hash=digest,
                                                   backends=backends) for i in silent])  # fmt: skip
        used = sorted({j for i in firing for j in tops[i]})
        masks = None
        if probe.primitive_names is not None and used:
            rows = load_masks(loaded, probe.split, [int(probe.rows[j]) for j in used], s.batch_size)
            masks = None if rows is None else {j: rows.get(int(probe.rows[j])) for j in used}
        classes = sorted({int(probe.labels[j]) for j in used})
        vocab = class_vocabularies([probe.class_names[c] for c in classes], s.llm, s.prompt,
                                   files.method_dir(METHOD) / "vocabulary", s.max_retries, s.seed)  # fmt: skip
        llm_calls = sum(v.llm_calls for v in vocab.values())
        held = parts["heldout"]
        key = {"sae": loaded.sae_id, "split": probe.split, "size": int(probe.images.shape[-1]), "occluder": s.occluder,
               "stride": s.stride, "version": 1}  # fmt: skip
        cache = DropCache(files.method_dir(METHOD) / "occlusion", key)
        shared = time.perf_counter() - t0
        work = {"forward_images": 0, "vlm_images": 0, "llm_calls": llm_calls}
        for start in range(0, len(firing), s.chunk):
            t1 = time.perf_counter()
            chunk = firing[start : start + s.chunk]
            drops, logit_drops, per_class = ablation_drops(loaded.classifier.net, loaded.sae, probe.images[held], probe.labels[held],
                                              chunk, len(probe.class_names), s.batch_size)  # fmt: skip
            ablation = {i: top_drops(drops[r], logit_drops[r], per_class, probe.class_names, s.ablation_classes)
                        for r, i in enumerate(chunk)}  # fmt: skip
            inputs = ChunkInputs(loaded, probe, {i: tops[i] for i in chunk}, masks, vocab, perception, neurons,
                                 files, ablation, cache)  # fmt: skip
            results = explain_chunk(inputs, s)
            work["forward_images"] += results.forward_images
            work["vlm_images"] += results.vlm_images
            seconds = (time.perf_counter() - t1) / len(chunk) + shared / len(firing)
            records = []
            for i in chunk:
                out = results.latents[i]
                cost = Cost(llm_calls=round(llm_calls / len(firing)), vlm_images=round(out.vlm_images),
                            forward_images=round(out.forward_images), seconds=round(seconds, 4))  # fmt: skip
                records.append(ExplanationRecord.single(i, METHOD, out.text, candidates=out.candidates, cost=cost,
                                                        backends=backends, settings_hash=digest, reason=out.reason,
                                                        detail=out.detail))  # fmt: skip
            store.append(records)
            logger.info("patches: %d/%d latents, %d occluded images, %d patches scored", start + len(chunk),
                        len(firing), results.forward_images, results.vlm_images)  # fmt: skip
        return work
    finally:
        perception.close()


def run(settings: PatchSettings) -> dict[str, Any]:
    """The registry's entry point (:data:`~sae_lab.explainers.patches.EXPLAINER`)."""
    return run_patches(settings)


__all__ = ["METHOD", "NEVER_FIRES", "run", "run_patches", "summary_block"]
