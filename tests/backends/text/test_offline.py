import math

import numpy as np
import pytest

from sae_lab.backends.text import ChatRequest, OfflineBackend, format_stats_block, parse_short_answer, parse_stats_block

STATS = {
    "latent": 3,
    "frequency": 0.02,
    "top_classes": [
        {"class": "sun", "S": 2.1, "pmi": 1.3, "delta": -0.4, "w": 0.8},
        {"class": "wheel", "S": 1.7, "pmi": 1.1, "delta": -0.3, "w": 0.6},
        {"class": "clock", "S": 0.9, "pmi": 0.4, "delta": -0.1, "w": 0.2},
    ],
    "anti_classes": [{"class": "house", "S": -1.5, "pmi": -0.8, "delta": 0.2, "w": -0.4}],
    "monosemanticity": 0.7,
    "ground_truth": {"primitive": "spokes", "auc": 0.97},
}


def ask(stats: dict | None, **kwargs) -> ChatRequest:
    block = format_stats_block(stats) if stats is not None else "no statistics here"
    return ChatRequest.from_prompt(f"Name the latent.\n{block}\nAnswer in the format asked.", system="You label.")


@pytest.mark.parametrize(
    ("ground_truth", "label"),
    [
        ({"primitive": "spokes", "auc": 0.97}, "spokes"),
        ({"primitive": "spokes", "auc": 0.6}, "shared part of sun and wheel"),
        (None, "shared part of sun and wheel"),
        ([{"primitive": "arc", "auc": 0.85}, {"primitive": "spokes", "auc": 0.95}], "spokes"),
    ],
)
def test_label_from_ground_truth_or_classes(ground_truth, label):
    stats = {**STATS, "ground_truth": ground_truth}
    [result] = OfflineBackend().generate([ask(stats)])
    parsed = parse_short_answer(result.text)
    assert parsed is not None and parsed[0] == label
    assert parsed[1].startswith("offline:") and "sun (S 2.10)" in parsed[1]
    assert result.text.count("\n") == 1


def test_one_or_no_class():
    backend = OfflineBackend()
    one = {"latent": 1, "top_classes": [{"class": "hot air balloon"}]}
    assert backend.concept(one) == "part of hot air balloon"
    assert backend.concept({"latent": 2}) == "unidentified pattern"
    assert len(backend.concept({"top_classes": [{"class": "x " * 20}, {"class": "y"}]}).split()) <= 12


def test_missing_block_is_an_error():
    backend = OfflineBackend()
    assert backend.name == "offline:stats" and not backend.accepts_images
    results = backend.generate([ask(None), ask(STATS)])
    assert results[0].text is None and "BEGIN STATS" in results[0].error
    assert results[1].ok


def test_stats_block_round_trip():
    stats = {**STATS, "extra": [np.float32(0.123456), np.int64(4), math.nan, (1, 2)]}
    block = format_stats_block(stats)
    lines = block.splitlines()
    assert lines[0] == "BEGIN STATS" and lines[-1] == "END STATS" and len(lines) == 3
    parsed = parse_stats_block(f"intro\n{block}\noutro")
    assert parsed["extra"] == [0.123, 4, None, [1, 2]]
    assert parsed["top_classes"] == STATS["top_classes"]


def test_stats_block_tolerates_fences_and_takes_last():
    text = 'BEGIN STATS\n{"latent": 1}\nEND STATS\n  BEGIN STATS\n```json\n{"latent": 2}\n```\nEND STATS'
    assert parse_stats_block(text) == {"latent": 2}


@pytest.mark.parametrize(
    "text", ["", "BEGIN STATS\n{oops}\nEND STATS", "BEGIN STATS\n[1, 2]\nEND STATS", "BEGIN STATS {}"]
)
def test_stats_block_errors(text):
    with pytest.raises(ValueError):
        parse_stats_block(text)


def test_stats_block_rejects_unserialisable():
    with pytest.raises(TypeError):
        format_stats_block({"x": object()})
