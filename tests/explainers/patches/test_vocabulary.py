"""The vocabulary: the parser on the shapes LLM lists come in, the offline vocabulary, the on-disk cache, and an
answer without phrases (re-asked, then the offline vocabulary, recorded)."""

from __future__ import annotations

import json

import pytest

from sae_lab.explainers.patches.settings import PROMPT
from sae_lab.explainers.patches.vocabulary import (
    cache_path,
    class_vocabularies,
    merge,
    offline_vocabulary,
    parse_phrases,
)
from tests.explainers.patches.patch_fixtures import ScriptedLLM


@pytest.mark.parametrize(
    ("answer", "phrases"),
    [
        ("circular shape\nradiating lines\nsmall face", ["circular shape", "radiating lines", "small face"]),
        ("1. Circular shape\n2. Radiating lines\n3) A small face", ["circular shape", "radiating lines", "small face"]),
        ("- round body\n* rays\n• warm glow\n+ Rays", ["round body", "rays", "warm glow"]),
        ("circle, rays, and a smiling face.", ["circle", "rays", "smiling face"]),
        ("Features: circle; rays; glow", ["circle", "rays", "glow"]),
        ("a. wheels\nb) spokes", ["wheels", "spokes"]),
        (
            "Sure! Here are useful features for distinguishing a sun in a sketch:\n\n"
            "1. **Circular outline**: the body of the sun.\n2. **Rays** - lines radiating outward\n"
            "3. `Smiling face` (optional)\n\nI hope this helps!",
            ["circular outline", "rays", "smiling face"],
        ),
        (
            "Here you go:\n1.Circle\n2. A very long phrase that is really a whole sentence about the sun\n3. rays",
            ["rays"],
        ),  # "1.Circle" has no space after the marker and the preamble decides nothing; long items go
    ],
    ids=["lines", "numbered", "bulleted", "commas", "semicolons", "lettered", "markdown-with-prose", "malformed"],
)
def test_parser_reads_lists(answer, phrases):
    assert parse_phrases(answer) == phrases


@pytest.mark.parametrize(
    "answer",
    [None, "", "   \n", "I cannot help with that because sketches are subjective and there is no single answer.",
     "A sun is drawn as a circle with rays coming out of it, sometimes with a friendly face in the middle of it.",
     "1. \n2. 123\n-  ***"],
)  # fmt: skip
def test_parser_finds_nothing_in_prose_or_empty_items(answer):
    assert parse_phrases(answer) == []


def test_offline_vocabulary_is_primitives_and_synonyms():
    sun = offline_vocabulary("sun")
    assert sun[0] == "circle" and "rays" in sun and "ring" in sun and "spokes" in sun
    assert sun.index("spokes") > sun.index("circle")  # the class's primitives in world-table order
    assert offline_vocabulary("zebra") == ["zebra"]  # not a sketch-world class
    phrases, by_class = merge({c: v for c, v in class_vocabularies(["sun", "wheel"], "offline", PROMPT, None).items()})
    assert len(phrases) == len(set(phrases)) and set(by_class["sun"]) < set(by_class["wheel"])


def test_answers_are_cached_per_class_prompt_and_backend(tmp_path):
    llm = ScriptedLLM(lambda prompt, r: "1. round face\n2. rays" if "sun" in prompt else "- four legs\n- long tail")
    got = class_vocabularies(["sun", "house"], "hf:fake", PROMPT, tmp_path, backend=llm)
    assert got["sun"].phrases == ["round face", "rays"] and got["house"].phrases == ["four legs", "long tail"]
    assert len(llm.requests) == 2 and got["sun"].llm_calls == 1 and not got["sun"].cached
    assert llm.requests[0].messages[0]["content"] == PROMPT.replace("{class}", "sun")
    again = class_vocabularies(["sun", "house"], "hf:fake", PROMPT, tmp_path, backend=llm)
    assert len(llm.requests) == 2 and again["sun"].cached and again["sun"].phrases == ["round face", "rays"]
    stored = json.loads(cache_path(tmp_path, "sun", PROMPT, "hf:fake").read_text())
    assert stored["phrases"] == ["round face", "rays"] and stored["answer"].startswith("1. round face")
    class_vocabularies(["sun"], "hf:other", PROMPT, tmp_path, backend=llm)  # another backend: asked again
    class_vocabularies(["sun"], "hf:fake", PROMPT + " Be brief.", tmp_path, backend=llm)  # another prompt
    assert len(llm.requests) == 4


def test_an_answer_without_phrases_is_asked_again_then_falls_back(tmp_path):
    llm = ScriptedLLM(lambda prompt, r: "1. rays\n2. disc" if r == 1 else "I am not sure what you mean.")
    got = class_vocabularies(["sun"], "hf:fake", PROMPT, tmp_path, max_retries=2, backend=llm)["sun"]
    assert got.phrases == ["rays", "disc"] and got.llm_calls == 2 and got.errors == ["no phrases found in the answer"]
    assert "numbered list" in llm.requests[-1].messages[-1]["content"]  # the re-ask says what to do

    never = ScriptedLLM(lambda prompt, r: "Sketches vary a lot, so it depends on the artist and the style used.")
    got = class_vocabularies(["wheel"], "hf:fake", PROMPT, tmp_path, max_retries=2, backend=never)["wheel"]
    assert got.fallback and got.source == "offline" and got.phrases == offline_vocabulary("wheel")
    assert got.llm_calls == 3 and len(got.errors) == 3
    assert not cache_path(tmp_path, "wheel", PROMPT, "hf:fake").exists()  # a fallback is not cached: asked next time


def test_an_unknown_backend_spec_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown LLM backend spec"):
        class_vocabularies(["sun"], "gpt-9", PROMPT, tmp_path)
