"""LLM proposals: the answer parser, the prompt, and batched proposals with retries and the offline fallback."""

import pytest

from sae_lab.backends.text.ask import ECHO_CHARS
from sae_lab.backends.text.base import GenerationResult, TextBackend
from sae_lab.explainers.line.offline_proposer import OfflineProposer
from sae_lab.explainers.line.proposer import LLMProposer, build_messages, parse_proposal, request_seed
from tests.explainers.line.line_fixtures import *  # noqa: F403 -- the LINE fixtures (autouse ones included)
from tests.explainers.line.proposal_helpers import CLASS_NAMES, context, scored


@pytest.mark.parametrize(
    ("text", "concept", "reasoning"),
    [
        ("<thinking>round things fire it</thinking><answer>circle</answer>", "circle", "round things fire it"),
        ("<THINKING> spokes?\n</THINKING>\n<Answer> Radial Lines. </Answer>", "radial lines", "spokes?"),
        ("I think so.\n<answer>**wavy line**", "wavy line", "I think so."),  # no closing tag
        ("<thinking>x</thinking><answer></answer><answer>dots</answer>", "dots", "x"),
    ],
)
def test_parser_reads_well_formed_and_sloppy_answers(text, concept, reasoning):
    assert parse_proposal(text) == (concept, reasoning)


@pytest.mark.parametrize(
    "text",
    ["", None, "circle", "<thinking>no answer tag</thinking>", "<answer>a very long answer of words</answer>",
     "<answer>  </answer>", "<thinking>unclosed <answer>"],
)  # fmt: skip
def test_parser_rejects_malformed_and_empty_answers(text):
    assert parse_proposal(text)[0] is None


def test_prompt_lists_the_pool_best_first_and_the_proposals_so_far():
    ctx = context(scored_items=[scored("sun", 0.5), scored("ring", 0.75)], tried=["ring"])
    system, user = build_messages(ctx)
    assert system["role"] == "system" and "sketches" in system["content"]
    assert user["content"].index("ring: 0.750") < user["content"].index("sun: 0.500")
    assert "already proposed: ring" in user["content"] and "<answer>" in user["content"]
    summary = build_messages(ctx, summary=True)[1]["content"]
    assert "three best" in summary


class Scripted(TextBackend):
    """Answers from a function of (latent id in the prompt order, attempt); records every batch."""

    name = "scripted"

    def __init__(self, answer):
        self.answer, self.batches = answer, []

    def generate(self, requests):
        self.batches.append(requests)
        attempt = len(self.batches) - 1
        return [GenerationResult(text=self.answer(i, attempt, r)) for i, r in enumerate(requests)]


def test_llm_proposals_are_batched_retried_then_fall_back():
    def answer(i, attempt, request):
        if attempt == 0:
            return ["<thinking>round</thinking><answer>ring</answer>", "garbage", "<answer>sun</answer>"][i]
        return "<answer>still garbage here, too many words</answer>"

    backend = Scripted(answer)
    proposer = LLMProposer(backend, OfflineProposer(CLASS_NAMES), max_retries=2, temperature=0.5)
    contexts = [context(lat, scored_items=[scored("sun", 0.9)]) for lat in range(3)]
    out = proposer.propose(contexts, iteration=1)
    assert [len(b) for b in backend.batches] == [3, 2, 2]  # one call for all latents, then the failures together
    assert len({r.seed for b in backend.batches for r in b[:1]}) == 3  # a fresh seed per attempt
    assert all(len({r.seed for r in b}) == 1 for b in backend.batches)  # one seed per call: the backend can batch
    assert out[0].concept == "ring" and out[0].reasoning == "round" and not out[0].fallback and out[0].attempts == 1
    for p in out[1:]:
        assert p.fallback and p.attempts == 3 and len(p.errors) == 3 and p.raw
        assert p.concept not in ("sun",)  # the fallback never repeats a scored concept
    assert "already scored" in out[2].errors[0]
    retry_chat = backend.batches[1][0].messages
    assert retry_chat[-2]["role"] == "assistant" and "cannot be used" in retry_chat[-1]["content"]


def test_summary_may_repeat_a_scored_concept():
    backend = Scripted(lambda i, a, r: "<thinking>sum</thinking><answer>sun</answer>")
    proposer = LLMProposer(backend, OfflineProposer(CLASS_NAMES))
    out = proposer.propose([context(scored_items=[scored("sun", 0.9)])], iteration=11, summary=True)
    assert out[0].concept == "sun" and not out[0].fallback


def test_failed_requests_count_as_unusable():
    class Failing(TextBackend):
        name = "failing"

        def generate(self, requests):
            return [GenerationResult(None, "HTTP 500") for _ in requests]

    out = LLMProposer(Failing(), OfflineProposer(CLASS_NAMES), max_retries=1).propose([context()], 1)
    assert out[0].fallback and out[0].errors == ["HTTP 500", "HTTP 500"]


def test_a_failed_request_is_sent_again_unchanged_and_a_long_answer_is_echoed_trimmed():
    class Flaky(TextBackend):
        name = "flaky"

        def __init__(self):
            self.batches = []

        def generate(self, requests):
            self.batches.append(requests)
            if len(self.batches) == 1:  # latent 0: transport failure; latent 1: a long unusable answer
                return [GenerationResult(None, "HTTP 503"), GenerationResult("x" * (ECHO_CHARS * 2))]
            return [GenerationResult("<thinking>t</thinking><answer>spiral</answer>") for _ in requests]

    backend = Flaky()
    out = LLMProposer(backend, OfflineProposer(CLASS_NAMES), seed=4).propose([context(0), context(1)], iteration=2)
    assert [len(b) for b in backend.batches] == [2, 2]  # both pending latents in the second round's one call
    assert [p.concept for p in out] == ["spiral", "spiral"] and not any(p.fallback for p in out)
    assert [p.attempts for p in out] == [2, 2] and out[0].errors == ["HTTP 503"] and len(out[1].errors) == 1
    assert [b[0].seed for b in backend.batches] == [request_seed(4, 2, 0), request_seed(4, 2, 1)]
    again, reasked = backend.batches[1]
    assert again.messages == backend.batches[0][0].messages  # nothing to show back after a failed request
    assert reasked.messages[-2] == {"role": "assistant", "content": "x" * ECHO_CHARS}
    assert "cannot be used" in reasked.messages[-1]["content"]
