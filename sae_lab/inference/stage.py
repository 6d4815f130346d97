"""The quickstart ``why`` stage: explain a few held-out sketch-world images and check the top latent against the
ground truth (is it a latent that detects a primitive actually drawn in the image?)."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from sae_lab.run import GT_AUC, RunFiles, read_neurons


def latent_primitives(run_dir: str | os.PathLike, min_auc: float = GT_AUC) -> dict[int, str] | None:
    """``{latent: primitive}`` from the report (``ground_truth.primitive`` with ``image_auc >= min_auc``); None when
    the run has no report."""
    files = RunFiles(run_dir)
    if not files.has_report():
        return None
    return {n.latent: n.gt_primitive for n in read_neurons(files) if n.gt_primitive and (n.gt_auc or 0.0) >= min_auc}


def top_latent_hits(whys: Sequence, image_primitives: Sequence[Sequence[str]], gt: dict[int, str]) -> list[bool]:
    """Per image whose ranked latents include one with a ground-truth primitive: is the first such latent's
    primitive drawn in the image? Latents without a ground truth are skipped; images with none are left out."""
    hits = []
    for why, prims in zip(whys, image_primitives):
        first = next((lat.id for lat in why.latents if lat.id in gt), None)
        if first is not None:
            hits.append(gt[first] in prims)
    return hits


def run_why_stage(
    run_dir: str | os.PathLike,
    sae_dir: str | os.PathLike | None,
    n_images: int = 8,
    world_seed: int = 0,
    *,
    classifier: str | os.PathLike | None = None,
    first_index: int | None = None,
    top: int = 5,
    print_fn: Callable[[str], Any] | None = print,
) -> dict[str, Any]:
    """Explains ``n_images`` held-out sketch-world images with the run's classifier, SAE and labels, prints the
    answers, and measures how often the top latent is a detector of a primitive drawn in the image.

    Args:
        run_dir: the report folder (labels, ``neurons.jsonl``).
        sae_dir: the SAE export folder (None: the run's, see :func:`~sae_lab.inference.lab.resolve_run`).
        n_images: images explained.
        world_seed: sketch-world seed.
        classifier: classifier checkpoint (None: the SAE's).
        first_index: first index of the world's ``test`` stream; None starts after the classifier's own test
            images (``world_test``), so no stage has seen these.
        top: latents printed per image.
        print_fn: where the answers go (None: nowhere).

    Returns:
        The summary.json block ``{"images", "top_latent_gt_rate", "seconds"}``; the rate is None without a
        ``neurons.jsonl`` or when no image's latents have a ground truth.
    """
    from sae_lab.data.world import SketchWorld
    from sae_lab.inference.lab import SaeLab
    from sae_lab.inference.sentence import template_sentence

    t0 = time.perf_counter()
    lab = SaeLab.load(run_dir, sae=sae_dir, classifier=classifier)
    world = SketchWorld(image_size=lab.image_size, seed=world_seed)
    if first_index is None:
        first_index = int(lab.classifier.data_hparams.get("world_test", 0) or 0)
    samples = [world.sample(first_index + i, "test") for i in range(n_images)]
    prims = [[world.primitives[p] for p in s.primitives.nonzero()[0]] for s in samples]
    names = [f"world test #{first_index + i} ({world.classes[s.label]}: {', '.join(p)})"
             for i, (s, p) in enumerate(zip(samples, prims))]  # fmt: skip
    whys = lab.why([s.image for s in samples], names=names, top=None, sentences=False)
    gt = latent_primitives(lab.paths.run_dir) if lab.paths.run_dir is not None else None
    hits = top_latent_hits(whys, prims, gt) if gt else []
    for i, why in enumerate(whys):
        whys[i] = shown = dataclasses.replace(why, latents=why.latents[:top])
        shown.sentence = template_sentence(shown)
        if print_fn is not None:
            print_fn(shown.to_text())
    if print_fn is not None and hits:
        print_fn(f"[why] top latent is a ground-truth detector of a drawn primitive on {sum(hits)}/{len(hits)} images")
    return {
        "images": n_images,
        "top_latent_gt_rate": round(sum(hits) / len(hits), 4) if hits else None,
        "seconds": round(time.perf_counter() - t0, 1),
    }
