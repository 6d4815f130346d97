"""What ``evaluate`` scores: the latent sample, and per method the explanation of each sampled latent.

The rows are every ``explanations/<method>.jsonl`` of the run plus three baselines on the same latents
(DESIGN.md, "Evaluation"): ``random`` (a random concept of the run's vocabulary, seeded), ``top-class`` (the
latent's top class by S) and, on the sketch world, ``oracle`` (its best ground-truth primitive).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from sae_lab.data.world import PRIMITIVES
from sae_lab.explainers.base import parse_latents
from sae_lab.run.identity import record_identity
from sae_lab.run.records import ExplanationRecord, NeuronRecord

BASELINES = ("random", "top-class", "oracle")
"""The baseline methods' names (no explanation file may take them)."""

Explanations = dict[str, dict[int, ExplanationRecord]]
"""``{method: {latent: record}}``."""


def sample_latents(neurons: Sequence[NeuronRecord], n: int = 64, seed: int = 0, latents: str | None = None
                   ) -> list[int]:  # fmt: skip
    """The latents every method is scored on: a seeded random sample of ``n`` live latents (all when fewer),
    chosen from the report alone, never by how well anything explains them.

    Args:
        neurons: the report's records.
        n: sample size.
        seed: the sample's seed.
        latents: override: ``"all"`` (every live latent) or ids (``"0-63,70"``; each must be in the report).

    Raises:
        ValueError: an id the report does not have, or no live latent.
    """
    live = sorted(r.latent for r in neurons if not r.dead)
    if latents is not None:
        if latents.strip() == "all":
            return live
        ids = parse_latents(latents)
        known = {r.latent for r in neurons}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise ValueError(f"latents {unknown[:10]} are not in the report (it has {len(known)} latents)")
        return ids
    if not live:
        raise ValueError("the report has no live latent to evaluate")
    if n >= len(live):
        return live
    pick = np.random.default_rng(seed).choice(len(live), size=n, replace=False)
    return sorted(live[int(i)] for i in pick)


def is_sketch_world(neurons: Sequence[NeuronRecord]) -> bool:
    """The report measured ground truth (the sketch world's primitives)."""
    return any(r.ground_truth for r in neurons)


def vocabulary(class_names: Sequence[str], sketch_world: bool) -> list[str]:
    """The run's concept vocabulary (the ``random`` baseline draws from it): class names, plus the primitives on
    the sketch world."""
    words = list(class_names) + (list(PRIMITIVES) if sketch_world else [])
    return list(dict.fromkeys(words))


def baselines(neurons: Mapping[int, NeuronRecord], latents: Sequence[int], vocab: Sequence[str], seed: int = 0,
              sketch_world: bool = True) -> Explanations:  # fmt: skip
    """The baseline explanations of ``latents`` (single concepts, no cost).

    ``random``: a concept of ``vocab`` drawn with ``(seed, latent)``; ``top-class``: the latent's top class by S;
    ``oracle`` (sketch world only): its best ground-truth primitive, whatever its AUC. A latent without that
    information is missing from the baseline.
    """
    if not vocab:
        raise ValueError("the random baseline needs a vocabulary (no class names?)")
    out: Explanations = {"random": {}, "top-class": {}}
    if sketch_world:
        out["oracle"] = {}
    for latent in latents:
        rng = np.random.default_rng([seed, latent])
        out["random"][latent] = ExplanationRecord.single(latent, "random", vocab[int(rng.integers(len(vocab)))])
        neuron = neurons.get(latent)
        if neuron is not None and neuron.top_class:
            out["top-class"][latent] = ExplanationRecord.single(latent, "top-class", neuron.top_class)
        if sketch_world and neuron is not None and neuron.gt_primitive:
            out["oracle"][latent] = ExplanationRecord.single(latent, "oracle", neuron.gt_primitive)
    return out


def recorded_sae_ids(record: ExplanationRecord) -> list[str]:
    """The SAE a record says it explains (:func:`~sae_lab.run.identity.record_identity`), if it says."""
    found = record_identity(record)
    return [found] if found else []


def check_same_sae(explanations: Explanations, sae_id: str, sae_dir: str = "", line_params: dict | None = None
                   ) -> None:  # fmt: skip
    """Refuses explanations made for another SAE (the run layer already leaves out records whose identity is not
    the report's; this catches the rest: a report that records no identity, LINE's ``params.json``).

    Args:
        explanations: every method's records.
        sae_id: this run's SAE identity (:attr:`~sae_lab.run.LoadedRun.sae_id`).
        sae_dir: where this run's SAE is (for the message).
        line_params: LINE's ``line/params.json`` (its ``sae`` field), when there.

    Raises:
        ValueError: naming the file, the SAE it was made for and this run's SAE.
    """
    where = f" ({sae_dir})" if sae_dir else ""
    theirs: dict[str, str] = {}
    for method, records in explanations.items():
        for record in records.values():
            other = next((s for s in recorded_sae_ids(record) if s != sae_id), None)
            if other is not None:
                theirs[f"explanations/{method}.jsonl (latent {record.latent})"] = other
                break
    if line_params and line_params.get("sae") and line_params["sae"] != sae_id:
        theirs["line/params.json"] = str(line_params["sae"])
    if theirs:
        what, other = next(iter(theirs.items()))
        raise ValueError(
            f"{what} explains SAE {other}, but this run's SAE is {sae_id}{where}: explanations from another SAE "
            "cannot be evaluated here; re-run that explainer on this run or remove its file"
        )


def select(explanations: Explanations, latents: Sequence[int]) -> tuple[Explanations, dict[str, int]]:
    """Each method's records of ``latents`` that explain something, and how many of ``latents`` it misses."""
    chosen: Explanations = {}
    missing: dict[str, int] = {}
    for method, records in explanations.items():
        chosen[method] = {k: records[k] for k in latents if k in records and records[k].ok}
        missing[method] = len(latents) - len(chosen[method])
    return chosen, missing


__all__ = ["BASELINES", "Explanations", "baselines", "check_same_sae", "is_sketch_world", "recorded_sae_ids",
           "sample_latents", "select", "vocabulary"]  # fmt: skip
