"""One chunk of latents: shared occlusion of their top images, one patch per (latent, image), one perception call
over the distinct patches, and per latent the phrase with the highest mean presence over its patches.

A latent's candidate phrases are the vocabularies of the classes of its top images (the paper's per-class
vocabularies, pooled over the classes the latent is seen on). Phrases whose presences equal an earlier phrase's on
every one of the latent's patches carry no new evidence (the offline backend scores synonyms alike); only the
first of them is ranked.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from torch import Tensor

from sae_lab.explainers.patches.cache import DropCache
from sae_lab.explainers.patches.occlusion import PairDrops, SaeScorer, occlude_pairs, patch_box, pixel_map, positions
from sae_lab.explainers.patches.outputs import crop_image, inside, patch_iou, write_latent_pngs
from sae_lab.explainers.patches.settings import PatchSettings
from sae_lab.explainers.patches.vocabulary import Vocabulary, merge
from sae_lab.run.secrets import scrub

NOTHING_PRESENT = "no vocabulary phrase is present in its patches"
CALLS_FAILED = "every LLM request for its classes' vocabularies failed"
"""The reason of a latent none of whose classes got phrases from the LLM because its requests failed: its record is
marked ``detail["failed"]`` (no label; the next run tries it again, the fallback vocabularies being uncached)."""


class ChunkInputs(NamedTuple):
    """What a chunk needs, computed once per run."""

    loaded: Any
    """The run's models (:class:`~sae_lab.run.load.LoadedRun`)."""
    probe: Any
    """The probe set."""
    tops: dict[int, list[int]]
    """Latent → its top probe-image indices, best first."""
    masks: dict[int, Tensor | None] | None
    """Probe-image index → (P, S, S) bool primitive masks (sketch world), else None."""
    vocab: dict[str, Vocabulary]
    """Class name → its vocabulary."""
    perception: Any
    """The perception backend."""
    neurons: dict
    """Latent → :class:`~sae_lab.run.records.NeuronRecord` (ground truth for ``gt_iou``)."""
    files: Any
    """The run's :class:`~sae_lab.run.files.RunFiles`."""
    ablation: dict[int, list[dict]]
    """Latent → its top accuracy drops."""
    cache: DropCache | None = None
    """Occlusion maps already computed (None: occlude everything)."""


@dataclass
class LatentOutcome:
    text: str | None
    reason: str | None
    candidates: list[dict]
    detail: dict[str, Any]
    forward_images: float
    """Its share of the occluded images run (an image's variants split among the latents that used it)."""
    vlm_images: float
    """Its share of the patches scored."""


@dataclass
class ChunkOutcome:
    forward_images: int
    vlm_images: int
    latents: dict[int, LatentOutcome] = field(default_factory=dict)


def rank_phrases(presence: np.ndarray, phrases: list[str], k: int = 3) -> list[dict]:
    """The ``k`` phrases with the highest mean presence over the patches (rows), ties in phrase order, a phrase
    scoring exactly like an earlier one on every patch skipped: ``[{concept, score}]``."""
    score = presence.mean(0)
    order = np.argsort(-score, kind="stable")
    out, seen = [], []
    for j in order:
        column = presence[:, j]
        if any(np.array_equal(column, c) for c in seen):
            continue
        seen.append(column)
        out.append({"concept": phrases[j], "score": round(float(score[j]), 4)})
        if len(out) == k:
            break
    return out


def chunk_drops(x: ChunkInputs, s: PatchSettings) -> tuple[PairDrops, dict[int, float]]:
    """The occlusion map of every (latent, top image) pair of the chunk, from the cache or one shared occlusion of
    the images some pair still needs (then cached); and each latent's share of the forward images run (an image's
    variants split evenly among the latents that needed it)."""
    rows = {j: int(x.probe.rows[j]) for js in x.tops.values() for j in js}
    cached = x.cache.maps() if x.cache is not None else {}
    missing = {i: [j for j in js if (i, rows[j]) not in cached] for i, js in x.tops.items()}
    missing = {i: js for i, js in missing.items() if js}
    offsets = positions(int(x.probe.images.shape[-1]), s.occluder, s.stride)
    drops = {(i, j): cached[(i, rows[j])] for i, js in x.tops.items() for j in js if (i, rows[j]) in cached}
    if not missing:
        return PairDrops(drops, offsets, 0, 0), {}
    need = list(missing)
    scorer = SaeScorer(x.loaded.classifier.net, x.loaded.sae, need)
    occ = occlude_pairs(scorer, x.probe.images, missing, need, s.occluder, s.stride, s.batch_size)
    if x.cache is not None:
        x.cache.put({(i, rows[j]): d for (i, j), d in occ.drops.items()})
    users = Counter(j for js in missing.values() for j in js)
    per_image = occ.forward_images / occ.images
    share = {i: sum(per_image / users[j] for j in js) for i, js in missing.items()}
    return PairDrops({**drops, **occ.drops}, offsets, occ.forward_images, occ.images), share


def explain_chunk(x: ChunkInputs, s: PatchSettings) -> ChunkOutcome:
    """Explains the latents of ``x.tops`` together (see the module docstring)."""
    from sae_lab.evaluate.naming import has_ground_truth

    probe, latents = x.probe, list(x.tops)
    occ, share = chunk_drops(x, s)

    keys: dict[tuple, int] = {}  # (image, box) → patch index: one crop scored once however many latents share it
    crops, boxes = [], {}
    for i in latents:
        boxes[i] = [patch_box(occ.drops[(i, j)], occ.offsets, s.occluder, s.keep) for j in x.tops[i]]
        for j, box in zip(x.tops[i], boxes[i]):
            if (j, box) not in keys:
                keys[(j, box)] = len(crops)
                masks = x.masks.get(j) if x.masks else None
                names = inside(masks, box, probe.primitive_names) if x.masks is not None else None
                crops.append(crop_image(probe.images[j], box, names))
    patch_users = Counter(keys[(j, b)] for i in latents for j, b in zip(x.tops[i], boxes[i]))
    phrases, by_class = merge(x.vocab)
    presence = np.asarray(x.perception.presence(crops, phrases), dtype=np.float32)

    out = ChunkOutcome(occ.forward_images, len(crops))
    for i in latents:
        tops = x.tops[i]
        rows = [keys[(j, b)] for j, b in zip(tops, boxes[i])]
        classes = list(dict.fromkeys(probe.class_names[int(probe.labels[j])] for j in tops))
        allowed = sorted({p for c in classes for p in by_class[c]})
        ranked = rank_phrases(presence[np.ix_(rows, allowed)], [phrases[p] for p in allowed])
        ok = bool(ranked) and ranked[0]["score"] > 0
        folder = x.files.method_dir("patches") / str(i)
        folder.mkdir(parents=True, exist_ok=True)
        for old in [*folder.glob("map-*.png"), *folder.glob("patch-*.png")]:
            old.unlink()
        drops = [occ.drops[(i, j)] for j in tops]
        maps, pngs = write_latent_pngs(folder, folder.relative_to(x.files.root).as_posix(),
                                       [probe.images[j] for j in tops],
                                       [pixel_map(d, occ.offsets, s.occluder) for d in drops], boxes[i],
                                       [crops[r] for r in rows])  # fmt: skip
        detail: dict[str, Any] = {
            "patches": [
                {"image": p, "caption": f"{probe.class_names[int(probe.labels[j])]} · drop {float(d.max()):.2f}"}
                for p, j, d in zip(pngs, tops, drops)
            ],
            "maps": maps,
            "rows": [int(probe.rows[j]) for j in tops],
            "boxes": [list(b) for b in boxes[i]],
            "split": probe.split,
            "phrases": len(allowed),
            "ablation": x.ablation.get(i, []),
        }
        fallback = [c for c in classes if x.vocab[c].fallback]
        if fallback:
            detail["vocabulary_fallback"] = fallback
        down = [x.vocab[c] for c in classes if x.vocab[c].call_failed]
        failed = len(down) == len(classes) > 0
        if failed:
            detail["failed"] = True
            why = next((v.errors[-1] for v in down if v.errors), "no answer")
        neuron = x.neurons.get(i)
        if x.masks and has_ground_truth(neuron) and neuron.gt_primitive in (probe.primitive_names or []):
            p = probe.primitive_names.index(neuron.gt_primitive)
            ious = [patch_iou(b, x.masks[j][p]) for j, b in zip(tops, boxes[i]) if x.masks.get(j) is not None]
            ious = [v for v in ious if v is not None]
            if ious:
                detail["gt_iou"] = round(float(np.mean(ious)), 4)
        out.latents[i] = LatentOutcome(
            text=ranked[0]["concept"] if ok and not failed else None,
            reason=f"{CALLS_FAILED} ({scrub(why)})" if failed else None if ok else NOTHING_PRESENT,
            candidates=ranked,
            detail=detail,
            forward_images=share.get(i, 0.0),
            vlm_images=sum(1 / patch_users[r] for r in set(rows)),
        )
    return out


__all__ = [
    "CALLS_FAILED",
    "NOTHING_PRESENT",
    "ChunkInputs",
    "ChunkOutcome",
    "LatentOutcome",
    "explain_chunk",
    "rank_phrases",
]
