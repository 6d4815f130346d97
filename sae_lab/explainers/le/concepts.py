"""The concepts LE explains with, as an (N, C) presence matrix over the probe images.

LE(Label): the images' class one-hots plus superclass indicators. LE's superclasses group ImageNet classes
(``imagenet_superclass_to_ids.json``); on the sketch world a superclass is a primitive, "the class contains
primitive p" (from the class table and the labels alone), named by the primitive.

LE(VLM): a perception backend's P(c | image) for a concept set: the class names, the sketch world's primitives and
their synonyms, and a user file of words (one per line).

Both then drop concepts as LE does (mean of the top-5 presences < 0.5, or std < 1e-5) and, beyond LE, a concept
whose presences equal an earlier one's (a synonym the annotations cannot tell apart, a superclass of one class):
it cannot add anything to a linear fit and would only split ties.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from sae_lab.data.world import CLASSES, PRIMITIVES, SYNONYMS


@dataclass
class ConceptMatrix:
    """Concept presences on the probe images."""

    names: list[str]
    """(C,) concept texts."""
    presence: Tensor
    """(N, C) float32 presences in [0, 1]."""
    dropped: dict[str, str]
    """Concept → why it was left out (``"rarely present"``, ``"constant"``, ``"same as <concept>"``)."""


def label_concepts(labels: Tensor, class_names: list[str], classes: dict[str, tuple[str, ...]] = CLASSES
                   ) -> tuple[list[str], Tensor]:  # fmt: skip
    """LE(Label)'s concepts: class one-hots, then one superclass per primitive of the class table.

    Args:
        labels: (N,) class index of each image.
        class_names: the classifier's classes; those missing from ``classes`` get no superclass.

    Returns:
        names and (N, C) float32 indicators.
    """
    onehot = torch.nn.functional.one_hot(labels.long(), len(class_names)).float()
    names, columns = list(class_names), [onehot]
    for p in PRIMITIVES:
        members = [i for i, c in enumerate(class_names) if p in classes.get(c, ())]
        if members and p not in names:
            names.append(p)
            columns.append(onehot[:, members].sum(1, keepdim=True))
    return names, torch.cat(columns, 1)


def read_concept_file(path: str | Path) -> list[str]:
    """The words of a concept file, one per line (blank lines and ``#`` comments skipped).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds no concept, or a concept twice (case-insensitive), naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"concept_file {path} does not exist")
    words = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    words = [w for w in words if w and not w.startswith("#")]
    if not words:
        raise ValueError(f"concept_file {path} holds no concepts (one word or phrase per line)")
    seen: dict[str, int] = {}
    for w in words:
        seen[w.lower()] = seen.get(w.lower(), 0) + 1
    repeated = [w for w, n in seen.items() if n > 1]
    if repeated:
        raise ValueError(f"concept_file {path} repeats {', '.join(repr(w) for w in repeated[:10])}")
    return words


def vlm_concept_set(class_names: list[str], sketch_world: bool, extra: list[str] | None = None) -> list[str]:
    """LE(VLM)'s concept texts: class names, then (sketch world) primitives and synonyms, then ``extra``;
    each once (case-insensitive, first spelling kept)."""
    texts = list(class_names)
    if sketch_world:
        texts += list(PRIMITIVES) + [s for p in PRIMITIVES for s in SYNONYMS.get(p, ())]
    texts += list(extra or [])
    out, seen = [], set()
    for t in texts:
        key = t.strip().lower()
        if key and key not in seen:
            seen.add(key)
            out.append(t.strip())
    return out


def filter_concepts(names: list[str], presence: Tensor, min_top5: float = 0.5, min_std: float = 1e-5) -> ConceptMatrix:
    """Keeps a concept when the mean of its top-5 presences is ≥ ``min_top5``, its std ≥ ``min_std`` (LE's
    filter, ``explain_neurons.py``) and its column differs from every kept one.

    Args:
        presence: (N, C) presences of ``names`` on all probe images.
    """
    if presence.shape[1] != len(names):
        raise ValueError(f"{presence.shape[1]} presence columns for {len(names)} concepts")
    presence = presence.float()
    top5 = presence.topk(min(5, len(presence)), dim=0).values.mean(0)
    std = presence.std(0) if len(presence) > 1 else torch.zeros(presence.shape[1])
    kept: list[int] = []
    dropped: dict[str, str] = {}
    columns: dict[bytes, int] = {}  # a column's bytes → the kept concept with it
    for i, name in enumerate(names):
        if not top5[i] >= min_top5:
            dropped[name] = "rarely present"
        elif not std[i] >= min_std:
            dropped[name] = "constant"
        else:
            key = presence[:, i].contiguous().numpy().tobytes()
            if key in columns:
                dropped[name] = f"same as {names[columns[key]]}"
            else:
                columns[key] = i
                kept.append(i)
    return ConceptMatrix([names[i] for i in kept], presence[:, kept], dropped)


__all__ = ["ConceptMatrix", "filter_concepts", "label_concepts", "read_concept_file", "vlm_concept_set"]
