"""Ground-truth naming on the sketch world (DESIGN.md, "Evaluation", "Ground truth").

A latent has ground truth when its best primitive reaches image-level AUC ≥ :data:`~sae_lab.run.GT_AUC`. An
explanation names the primitives its concepts mention, by name, synonym or class name (a class name names all its
primitives: "barn" names square, triangle and hatching). *Strict*: it names the latent's primitive and no other;
*lenient*: it names it among others. A linear explanation is judged on the set of concepts in its terms.
"""

from __future__ import annotations

from collections.abc import Iterable

from sae_lab.data.world import primitives_in_text
from sae_lab.run.files import GT_AUC
from sae_lab.run.records import ExplanationRecord, NeuronRecord


def explanation_concepts(record: ExplanationRecord) -> list[str]:
    """The concepts an explanation states: its terms' concepts, else its text."""
    if record.terms:
        return [t.concept for t in record.terms]
    return [record.text] if record.text else []


def named_primitives(concepts: Iterable[str]) -> set[str]:
    """Primitives the concepts name (each concept read on its own, so a long linear text loses none)."""
    return {p for concept in concepts for p in primitives_in_text(concept)}


def has_ground_truth(neuron: NeuronRecord | None, min_auc: float = GT_AUC) -> bool:
    """The latent's best primitive reaches image-level AUC ≥ ``min_auc``."""
    return bool(neuron and neuron.gt_primitive and neuron.gt_auc is not None and neuron.gt_auc >= min_auc)


def naming(record: ExplanationRecord, neuron: NeuronRecord | None, min_auc: float = GT_AUC
           ) -> tuple[float | None, float | None]:  # fmt: skip
    """``(strict, lenient)`` as 1.0 / 0.0 for a latent with ground truth; ``(None, None)`` otherwise."""
    if not record.ok or not has_ground_truth(neuron, min_auc):
        return None, None
    named = named_primitives(explanation_concepts(record))
    truth = neuron.gt_primitive
    return float(named == {truth}), float(truth in named)


__all__ = ["explanation_concepts", "has_ground_truth", "named_primitives", "naming"]
