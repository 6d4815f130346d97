"""Strict vs lenient ground-truth naming: names, synonyms, class names, linear explanations."""

import pytest

from sae_lab.evaluate import named_primitives, naming
from sae_lab.run import ExplanationRecord, NeuronRecord, Term

CIRCLE = NeuronRecord(0, ground_truth={"primitive": "circle", "image_auc": 0.95})


def single(text: str | None) -> ExplanationRecord:
    return ExplanationRecord.single(0, "m", text)


@pytest.mark.parametrize(
    ("text", "strict", "lenient"),
    [
        ("circle", 1.0, 1.0),
        ("a ring", 1.0, 1.0),  # a synonym names the primitive
        ("oval loop", 1.0, 1.0),  # two synonyms of the same primitive: still only circle
        ("sun", 0.0, 1.0),  # a class name names all its primitives (circle and spokes)
        ("wheel", 0.0, 1.0),
        ("circle and spokes", 0.0, 1.0),
        ("barn", 0.0, 0.0),  # square, triangle, hatching: not circle
        ("zebra", 0.0, 0.0),  # names nothing
    ],
)
def test_strict_and_lenient_on_names_synonyms_and_classes(text, strict, lenient):
    assert naming(single(text), CIRCLE) == (strict, lenient)


def test_linear_explanations_are_judged_on_the_concepts_of_their_terms():
    one = ExplanationRecord(0, "le", "0.80*ring + 0.10", terms=[Term("ring", 0.8)], bias=0.1)
    two = ExplanationRecord(0, "le", "0.80*circle + 0.20*star + 0.10", terms=[Term("circle", 0.8), Term("star", 0.2)],
                            bias=0.1)  # fmt: skip
    assert naming(one, CIRCLE) == (1.0, 1.0)
    assert naming(two, CIRCLE) == (0.0, 1.0)
    # every term is read on its own: a long mix loses no primitive to the 3-per-text cap of primitives_in_text
    many = [Term(c, 0.1) for c in ("square", "triangle", "star", "cross", "circle")]
    assert named_primitives(t.concept for t in many) == {"square", "triangle", "star", "cross", "circle"}


def test_no_ground_truth_or_no_explanation_gives_null():
    weak = NeuronRecord(1, ground_truth={"primitive": "circle", "image_auc": 0.7})  # below GT_AUC
    assert naming(single("circle"), weak) == (None, None)
    assert naming(single("circle"), NeuronRecord(2)) == (None, None)
    assert naming(single(None), CIRCLE) == (None, None)
