"""Candidate concepts: the offline noun-phrase rule, answer parsing, clean-up, and the batched ask with its
fallback (a fake LLM records what it is asked)."""

from __future__ import annotations

from sae_lab.backends.text.base import GenerationResult, TextBackend
from sae_lab.explainers.dnd import PROMPT, candidates_from, noun_phrases, offline_summary, parse_label
from sae_lab.explainers.dnd.summarize import plan, summarize


class FakeLLM(TextBackend):
    """Answers from a function of the prompt; records every batch."""

    name = "fake"

    def __init__(self, answer) -> None:
        self.answer = answer
        self.batches: list[list] = []

    def generate(self, requests):
        self.batches.append(list(requests))
        return [GenerationResult(self.answer(r)) for r in requests]


def test_noun_phrases_and_the_offline_rule():
    assert noun_phrases("a sketch of a circle and spokes") == ["circle", "spokes"]
    assert noun_phrases("A black and white line drawing of parallel lines, with dots.") == ["parallel lines", "dots"]
    assert noun_phrases("a drawing of a sketch") == []
    assert noun_phrases("a sketch of a star, dots and spokes") == ["star", "dots", "spokes"]
    caps = ["a sketch of a circle and spokes", "a sketch of a circle", "a sketch of spokes", "a sketch of spokes"]
    assert offline_summary(caps) == "spokes"  # spokes in 3 captions, circle in 2
    pair = ["a sketch of a star and dots", "a sketch of dots and a star"]
    assert offline_summary(pair) == "star" and offline_summary(pair[::-1]) == "dots"  # ties: the order shown …
    assert {offline_summary(pair, seed=k) for k in range(20)} == {"star", "dots"}  # … or the seed
    assert len({offline_summary(caps, seed=k) for k in range(20)}) == 1  # no tie, T = 0: the seed does not matter
    assert offline_summary(["a sketch of a", ""]) is None


def test_the_offline_rule_samples_at_the_llm_temperature():
    # spokes in 4 captions, circle in 2, dots in 1: at T the weights are 1, 0.5**(1/T), 0.25**(1/T).
    caps = ["a sketch of spokes and a circle", "a sketch of spokes and a circle", "a sketch of spokes",
            "a sketch of spokes and dots"]  # fmt: skip
    draws = [offline_summary(caps, seed=k, temperature=0.3) for k in range(2000)]
    share = {p: draws.count(p) / len(draws) for p in ("spokes", "circle", "dots")}
    z = 1 + 0.5 ** (1 / 0.3) + 0.25 ** (1 / 0.3)
    assert abs(share["spokes"] - 1 / z) < 0.03 and abs(share["circle"] - 0.5 ** (1 / 0.3) / z) < 0.03
    assert 0 < share["dots"] < 0.03  # 0.25**3.33 / z ≈ 0.01: rare, never excluded
    assert draws == [offline_summary(caps, seed=k, temperature=0.3) for k in range(2000)]  # seeded: reproducible
    hot = [offline_summary(caps, seed=k, temperature=5.0) for k in range(2000)]
    assert hot.count("dots") > 10 * draws.count("dots") / 2  # hotter: flatter
    assert {offline_summary(caps, seed=k, temperature=0.0) for k in range(50)} == {"spokes"}


def test_parse_label_and_clean_up():
    assert parse_label('Label: "Radiating lines."') == ("Radiating lines", None)
    assert parse_label("<thinking>x</thinking><answer>wheel</answer>") == ("wheel", None)
    assert parse_label("1. Concept: spiral shapes\nbecause …") == ("spiral shapes", None)
    assert parse_label("")[0] is None and parse_label("...")[0] is None
    assert "6 words" in parse_label("one two three four five six")[1]
    assert candidates_from(["Circle", "circle.", " CIRCLE ", "Spokes", None, "rays", "a", "b", "c"], 5) == [
        "circle", "spokes", "rays", "a", "b"]  # fmt: skip


def test_shuffles_are_seeded_per_latent_and_summary():
    a, b = plan(3, 10, 5, seed=0), plan(3, 10, 5, seed=0)
    assert [s.order for s in a] == [s.order for s in b]
    assert len({tuple(s.order) for s in a}) > 1 and sorted(a[0].order) == list(range(10))
    assert [s.order for s in plan(4, 10, 5, seed=0)] != [s.order for s in a]
    assert [s.order for s in plan(3, 10, 5, seed=1)] != [s.order for s in a]


def test_all_summaries_in_one_batched_call_with_the_design_prompt():
    llm = FakeLLM(lambda r: "Circular Shapes.")
    caps = {1: ["a sketch of a circle", "a sketch of a star"], 2: ["a sketch of dots"]}
    out = summarize(caps, 5, seed=0, llm=llm)
    assert len(llm.batches) == 1 and len(llm.batches[0]) == 10  # 2 latents x 5 summaries, one round
    text = llm.batches[0][0].messages[-1]["content"]
    assert text.startswith(PROMPT) and "a sketch of a circle" in text and "a sketch of a star" in text
    assert len({r.seed for r in llm.batches[0]}) == 10  # every request its own sampling seed
    assert all(s.label == "Circular Shapes" and s.source == "llm" and s.attempts == 1 for s in out[1])


def test_an_unusable_answer_is_asked_again_then_the_offline_rule_answers():
    llm = FakeLLM(lambda r: "I think these descriptions all show something rather abstract")
    out = summarize({7: ["a sketch of a spiral", "a sketch of a spiral and dots"]}, 2, seed=0, llm=llm, max_retries=2)
    assert len(llm.batches) == 3  # the first round and two re-asks
    for s in out[7]:
        assert s.source == "fallback" and s.label == "spiral" and s.attempts == 3 and len(s.errors) == 3
        assert "words" in s.errors[0]
    reask = llm.batches[1][0].messages
    assert reask[-2]["role"] == "assistant" and "cannot be used" in reask[-1]["content"]


def test_offline_means_no_llm():
    caps = {1: ["a sketch of a wave", "a sketch of a wave and dots"]}
    out = summarize(caps, 3, seed=0, llm=None, temperature=0.0)
    assert [s.label for s in out[1]] == ["wave"] * 3 and all(s.source == "offline" and s.attempts == 0 for s in out[1])
    sampled = summarize(caps, 20, seed=0, llm=None)  # at DnD's T = 0.3 "dots" (half as frequent) is drawn sometimes
    assert {s.label for s in sampled[1]} == {"wave", "dots"} and all(s.attempts == 0 for s in sampled[1])
    assert [s.label for s in sampled[1]] == [s.label for s in summarize(caps, 20, seed=0, llm=None)[1]]
