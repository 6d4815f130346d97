"""DnD's candidate concepts (Bai et al., "Step 2"): an LLM summarises a latent's captions several times, the
captions shuffled each time; the answers, cleaned and de-duplicated, are the candidates.

All latents' summaries go out together, one batched ``generate`` call per round
(:func:`~sae_lab.backends.text.ask.ask_until_parsed`); an answer that holds no usable concept is asked again, then
replaced by the offline rule — a noun phrase of the captions drawn by frequency at the LLM's temperature, seeded by
the summary — and recorded as such. With ``llm = offline`` that rule answers every summary (no model).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

PROMPT = (
    "State one coherent and concise concept label that is 1-5 words long that can semantically summarize and "
    "represent most, not necessarily all, of the conceptual similarities in the following descriptions: "
)
"""DnD's summary prompt (DESIGN.md); the shuffled captions follow it, separated by ``", "``."""
SYSTEM = "Answer with the concept label only: 1-5 words, no period, no quotation marks."
MAX_WORDS = 5
OFFLINE = "offline"
"""``llm`` spec of the model-free rule."""

# Words that are not part of what a caption shows: articles, prepositions, verbs, and the medium itself.
_STOP = frozenset("""
a an the of and or with without in on at to for from by into onto over under near next beside behind above below
around between along across is are was were be been being has have having it its this that these those there
their them they some any several many few one two three four five six seven eight nine ten lots lot set group
pair couple each other very small large big little tiny simple black white grey gray dark light blank
sketch sketches drawing drawings drawn image images picture pictures photo photos illustration illustrations
doodle doodles art clipart clip icon icons background paper page hand
""".split())  # fmt: skip
_WORD = re.compile(r"[a-z][a-z'-]*")
_MEDIUM = re.compile(r"\bline[- ](?:drawings?|art|sketch(?:es)?)\b")
"""'a line drawing of …' names the medium, not a line in it."""


def noun_phrases(caption: str) -> list[str]:
    """The runs of content words of a caption, in order, each once ("a sketch of a circle and spokes" →
    ``["circle", "spokes"]``; "parallel lines on paper" → ``["parallel lines"]``)."""
    out: list[str] = []
    run: list[str] = []
    text = re.sub(r"[,;:.!?()/]+", " and ", _MEDIUM.sub(" ", caption.lower()))  # punctuation ends a phrase too
    for word in [*_WORD.findall(text), "and"]:  # the sentinel ends the last run
        if word in _STOP:
            if run and " ".join(run) not in out:
                out.append(" ".join(run))
            run = []
        else:
            run.append(word)
    return out


def offline_summary(captions: Sequence[str], seed: int | None = None, temperature: float = 0.0) -> str | None:
    """The offline summariser: a noun phrase of the captions, drawn as a sampled LLM answer would be; None without one.

    Each caption counts a phrase once. With ``temperature`` 0 the phrase in the most captions (phrases in equally
    many — a sun's "circle" and "spokes" — told apart by ``seed``, so a latent's summaries name each of them). With
    ``temperature`` T > 0, phrase p is drawn with weight ``(count(p) / max count) ** (1 / T)``, so the shuffled
    summaries of a latent vary as a sampled LLM's do (DnD samples GPT at T = 0.3: a phrase in half as many captions
    as the top one is drawn a tenth as often). Without a seed, the first of the most frequent phrases in the order
    shown.
    """
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}
    for caption in captions:
        for phrase in noun_phrases(caption):
            counts[phrase] += 1
            first.setdefault(phrase, len(first))
    if not counts:
        return None
    top = max(counts.values())
    if seed is None:
        return min((p for p in counts if counts[p] == top), key=first.__getitem__)
    phrases = sorted(counts, key=first.__getitem__)
    if temperature <= 0:
        weights = [float(counts[p] == top) for p in phrases]
    else:
        weights = [(counts[p] / top) ** (1.0 / temperature) for p in phrases]
    return random.Random(seed).choices(phrases, weights=weights)[0]


def parse_label(text: str | None) -> tuple[str | None, str | None]:
    """An answer → ``(label, None)``, or ``(None, problem)`` when it holds no 1-5 word label.

    Takes an ``<answer>`` tag when there is one, else the first non-empty line; drops a leading ``Label:`` /
    ``Concept:`` / ``Answer:``, list marks, quotes and a final period.
    """
    if not text or not text.strip():
        return None, "the answer is empty"
    tagged = re.search(r"<answer>(.*?)</answer>", text, re.S | re.I)
    body = tagged.group(1) if tagged else text
    line = next((x.strip() for x in body.splitlines() if x.strip()), "")
    line = re.sub(r"^(?:[-*•\d.)\s]+)?(?:(?:concept\s+)?label|concept|answer)\s*:\s*", "", line, flags=re.I)
    label = line.strip().strip("\"'`*“”‘’").strip().rstrip(".!").strip()
    words = label.split()
    if not words or not re.search(r"[A-Za-z]", label):
        return None, "it holds no concept label"
    if len(words) > MAX_WORDS:
        return None, f"the label has {len(words)} words, more than {MAX_WORDS}"
    return label, None


def clean(label: str) -> str:
    """Lower-case, outer punctuation stripped, inner spaces collapsed."""
    return " ".join(label.lower().strip().strip("\"'`*.,;:!?").split())


def candidates_from(labels: Sequence[str | None], limit: int) -> list[str]:
    """The cleaned, de-duplicated labels in the order given (at most ``limit``)."""
    out: list[str] = []
    for label in labels:
        c = clean(label) if label else ""
        if c and c not in out:
            out.append(c)
    return out[:limit]


def derived_seed(seed: int, *parts: object) -> int:
    """A 31-bit seed from the run seed and a purpose (portable, independent of any other draw)."""
    digest = hashlib.sha256(json.dumps([seed, "dnd", *parts]).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass
class Summary:
    """One summary of one latent's captions."""

    shuffle_seed: int
    """Seed of the captions' order."""
    order: list[int]
    """The captions' indices in the order shown."""
    label: str | None = None
    """The accepted label (before clean-up)."""
    source: str = OFFLINE
    """``llm``, ``offline`` (``llm = offline``) or ``fallback`` (the LLM gave nothing usable)."""
    answer: str | None = None
    """The LLM's last raw answer."""
    attempts: int = 0
    """Requests sent (transport retries included)."""
    errors: list[str] = field(default_factory=list)
    """Why answers were rejected."""
    llm_seed: int | None = None
    """Sampling seed of the first request (round r adds r)."""
    call_failed: bool = False
    """Its last request failed in the backend (a refused key, a server down), not a parse problem."""


def plan(latent: int, n_captions: int, n: int, seed: int) -> list[Summary]:
    """The ``n`` summaries of a latent with their caption orders (seeded per latent and summary)."""
    out = []
    for k in range(n):
        s = derived_seed(seed, "shuffle", latent, k)
        order = list(range(n_captions))
        random.Random(s).shuffle(order)
        out.append(Summary(s, order, llm_seed=derived_seed(seed, "llm", latent, k)))
    return out


def summarize(captions: dict[int, list[str]], n: int, seed: int, llm=None, max_retries: int = 2,
              temperature: float = 0.3, max_new_tokens: int = 32) -> dict[int, list[Summary]]:  # fmt: skip
    """``n`` summaries per latent of its captions.

    Args:
        captions: latent → its captions (at least one each).
        n: Summaries per latent.
        seed: Run seed (caption orders and LLM sampling seeds derive from it).
        llm: A :class:`~sae_lab.backends.text.base.TextBackend`, or None for the offline rule.
        max_retries: Re-asks of an unusable answer before the offline rule answers.
        temperature: Sampling temperature.
        max_new_tokens: Answer budget.
    """
    from sae_lab.backends.text.ask import ask_until_parsed
    from sae_lab.backends.text.base import ChatRequest

    plans = {lat: plan(lat, len(caps), n, seed) for lat, caps in captions.items()}
    items = [(lat, s, [captions[lat][i] for i in s.order]) for lat, ss in plans.items() for s in ss]
    if llm is None:
        for _, s, shown in items:
            s.label = offline_summary(shown, seed=s.shuffle_seed, temperature=temperature)
        return plans
    chats = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT + ", ".join(shown)}]
             for _, _, shown in items]  # fmt: skip

    def request(i: int, messages: list[dict], round_: int) -> ChatRequest:
        s = items[i][1]
        return ChatRequest(messages, max_new_tokens=max_new_tokens, temperature=temperature,
                           seed=(s.llm_seed or 0) + round_)  # fmt: skip

    def reminder(problem: str) -> str:
        return f"That answer cannot be used: {problem}. Reply with one concept label of 1-5 words and nothing else."

    asked = ask_until_parsed(llm, chats, lambda text, i: parse_label(text), request, reminder, max_retries)
    for (_, s, shown), a in zip(items, asked):
        s.answer, s.attempts, s.errors, s.call_failed = a.text, a.attempts, list(a.errors), a.transport_failed
        if a.ok:
            s.label, s.source = a.value, "llm"
        else:
            s.label, s.source = offline_summary(shown, seed=s.shuffle_seed, temperature=temperature), "fallback"
    return plans


__all__ = ["MAX_WORDS", "OFFLINE", "PROMPT", "SYSTEM", "Summary", "candidates_from", "clean", "derived_seed",
           "noun_phrases", "offline_summary", "parse_label", "plan", "summarize"]  # fmt: skip
