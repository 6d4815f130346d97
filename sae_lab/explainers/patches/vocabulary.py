"""The per-class vocabulary: an LLM's list of short phrases that distinguish each class in a sketch.

Zhao et al. (arXiv 2310.10708) ask an LLM, per class, for the features that distinguish it and score patches
against the phrases. Answers are parsed from numbered, bulleted, comma-separated or one-per-line lists
(:func:`parse_phrases`); an answer without phrases is asked again (:func:`~sae_lab.backends.text.ask
.ask_until_parsed`), and a class still without phrases falls back to the offline vocabulary, recorded. Answers
are cached on disk per (class, prompt, backend spec), so a re-run or another latent set asks nothing twice.
The offline vocabulary of a sketch-world class is its primitives and their synonyms.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sae_lab.data.world import CLASSES, SYNONYMS
from sae_lab.run.io import atomic_write_text
from sae_lab.run.secrets import scrub

logger = logging.getLogger(__name__)

MAX_WORDS = 6
"""Longest phrase kept (longer items are prose, not a short phrase)."""
MAX_PHRASES = 25
"""Phrases kept per class answer."""
MAX_NEW_TOKENS = 300

_MARKER = re.compile(r"^\s*(?:\(?\d{1,2}[.):]|\(?[a-z][.)]|[-*•+–—●▪·>])\s+(.*)$", re.IGNORECASE)
_MARKUP = re.compile(r"\*\*|__|`|^#+\s*")
_EXPLAIN = re.compile(r"\s*(?::|\s[-–—]\s|\s\(|;).*$")  # "phrase: why" / "phrase - why" / "phrase (why)"
_LEADING = re.compile(r"^(?:(?:and|or|a|an|the)\s+)+", re.IGNORECASE)
_SENTENCE = re.compile(
    r"\b(?:i|you|we|they|it|this|that|is|are|was|be|can|could|would|should|will|depends|because|if|so|sure|here)\b",
    re.IGNORECASE,
)  # words of a sentence, not of a feature phrase: a comma-separated line holding them is prose
_STRIP = " \t\"'“”‘’«».,;:!?*_`"


@dataclass
class Vocabulary:
    """One class's phrases and how they were obtained."""

    cls: str
    """The class."""
    phrases: list[str]
    """Short phrases, lower case, in the answer's order, no duplicates."""
    source: str
    """The backend spec that gave them, or ``offline`` (asked for, or fallen back to)."""
    fallback: bool = False
    """The LLM gave no phrases after every re-ask: these are the offline vocabulary."""
    llm_calls: int = 0
    """Requests sent for this class in this run (0 when cached or offline)."""
    cached: bool = False
    errors: list[str] = field(default_factory=list)
    """Why each rejected answer was rejected."""
    call_failed: bool = False
    """A fallback because the LLM's last request failed in the backend (a refused key, a server down)."""


def _clean(item: str) -> str:
    item = _EXPLAIN.sub("", _MARKUP.sub("", item)).strip(_STRIP).strip()
    item = _LEADING.sub("", item).strip(_STRIP)
    return " ".join(item.lower().split())


def _keep(item: str) -> bool:
    return bool(item) and len(item.split()) <= MAX_WORDS and any(ch.isalpha() for ch in item)


def parse_phrases(text: str | None) -> list[str]:
    """Short phrases from an LLM's list, in order, lower case, de-duplicated.

    Reads numbered (``1.`` ``2)``), bulleted (``-`` ``*`` ``•``) and lettered items, markdown emphasis, an
    explanation after the phrase (``**Rays**: lines from the centre`` → ``rays``), one phrase per line, and
    comma-separated lists (``circle, rays and a face``). Preambles and headers (lines ending in ``:``), prose
    sentences and items of more than :data:`MAX_WORDS` words are dropped. Returns [] when nothing is left.
    """
    if not text:
        return []
    lines = [ln for ln in (x.strip() for x in text.replace("\r", "\n").splitlines()) if ln]
    marked = [m.group(1) for m in (_MARKER.match(ln) for ln in lines) if m]
    if marked:
        items = marked
    else:
        body = [ln for ln in lines if not ln.endswith(":")]
        short = [ln for ln in body if len(_clean(ln).split()) <= MAX_WORDS and "," not in ln]
        if len(body) > 1 and len(short) == len(body):  # one phrase per line
            items = body
        else:  # comma- or semicolon-separated, possibly after "…features:" on the same line
            items = [part for ln in body for part in re.split(r"[,;]|\band\b", ln.split(":")[-1])]
            items = [part for part in items if part.strip(_STRIP)]
            if len(items) < 2 or any(not _keep(_clean(p)) or _SENTENCE.search(p) for p in items):
                return []  # prose, not a list
    out: list[str] = []
    for item in items:
        phrase = _clean(item)
        if _keep(phrase) and phrase not in out:
            out.append(phrase)
    return out[:MAX_PHRASES]


def offline_vocabulary(cls: str) -> list[str]:
    """A sketch-world class's primitives and their synonyms (world order); another class: its own name."""
    if cls not in CLASSES:
        return [cls.lower()]
    out: list[str] = []
    for p in CLASSES[cls]:
        out.extend(w for w in SYNONYMS[p] if w not in out)
    return out


def cache_path(folder: Path, cls: str, prompt: str, spec: str) -> Path:
    """The cache file of one (class, prompt, backend spec)."""
    key = json.dumps({"class": cls, "prompt": prompt, "llm": spec.strip()}, sort_keys=True)
    return folder / f"{hashlib.sha1(key.encode()).hexdigest()[:20]}.json"


def _read_cache(path: Path) -> list[str] | None:
    try:
        phrases = json.loads(path.read_text()).get("phrases")
    except (OSError, ValueError, AttributeError):
        return None
    return [str(p) for p in phrases] if isinstance(phrases, list) and phrases else None


def class_vocabularies(classes: list[str], llm: str, prompt: str, cache_dir: Path, max_retries: int = 2,
                       seed: int = 0, backend=None) -> dict[str, Vocabulary]:  # fmt: skip
    """Each class's vocabulary: cached, offline, or asked of the LLM in one batched round per re-ask.

    Args:
        classes: class names.
        llm: the text backend spec (``offline`` asks nothing).
        prompt: the question, with ``{class}``.
        cache_dir: folder of the cached answers.
        max_retries: re-asks after an answer without phrases.
        seed: sampling seed of the requests.
        backend: a ready backend to use instead of building one from ``llm`` (tests).

    Raises:
        ValueError: an unknown backend spec (the message gives the grammar).
    """
    if llm.strip().lower().partition(":")[0] == "offline" and backend is None:
        return {c: Vocabulary(c, offline_vocabulary(c), "offline") for c in classes}
    out: dict[str, Vocabulary] = {}
    todo = []
    for c in classes:
        cached = _read_cache(cache_path(cache_dir, c, prompt, llm))
        if cached:
            out[c] = Vocabulary(c, cached, llm.strip(), cached=True)
        else:
            todo.append(c)
    if todo:
        out.update(_ask(todo, llm, prompt, cache_dir, max_retries, seed, backend))
    return {c: out[c] for c in classes}


def _ask(classes: list[str], llm: str, prompt: str, cache_dir: Path, max_retries: int, seed: int,
         backend) -> dict[str, Vocabulary]:  # fmt: skip
    from sae_lab.backends.text import ChatRequest, make_backend
    from sae_lab.backends.text.ask import ask_until_parsed

    owned = backend is None
    backend = make_backend(llm) if owned else backend
    chats = [[{"role": "user", "content": prompt.replace("{class}", c)}] for c in classes]

    def parse(text: str | None, i: int):
        phrases = parse_phrases(text)
        return (phrases, None) if phrases else (None, "no phrases found in the answer")

    def request(i: int, messages: list[dict], round_: int) -> ChatRequest:
        return ChatRequest(messages, max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, seed=seed + round_)

    def reminder(problem: str) -> str:
        return (
            f"{problem}. Answer with a numbered list of short phrases (at most {MAX_WORDS} words each), one per line."
        )

    try:
        asked = ask_until_parsed(backend, chats, parse, request, reminder, max_retries=max_retries)
    finally:
        if owned:
            backend.close()
    out = {}
    for c, a in zip(classes, asked):
        if a.ok:
            out[c] = Vocabulary(c, a.value, scrub(llm.strip()), llm_calls=a.attempts, errors=a.errors)  # no key kept
            path = cache_path(cache_dir, c, prompt, llm)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps({**asdict(out[c]), "answer": a.text}, indent=1))
        else:
            logger.warning("vocabulary of %r: no phrases after %d rounds (%s); using the offline vocabulary", c,
                           a.rounds, "; ".join(a.errors[-2:]))  # fmt: skip
            out[c] = Vocabulary(c, offline_vocabulary(c), "offline", fallback=True, llm_calls=a.attempts,
                                errors=a.errors, call_failed=a.transport_failed)  # fmt: skip
    return out


def merge(vocabularies: dict[str, Vocabulary]) -> tuple[list[str], dict[str, list[int]]]:
    """All phrases once (first appearance order) and, per class, the indices of its phrases."""
    phrases: list[str] = []
    where: dict[str, int] = {}
    by_class: dict[str, list[int]] = {}
    for c, v in vocabularies.items():
        for p in v.phrases:
            if p not in where:
                where[p] = len(phrases)
                phrases.append(p)
        by_class[c] = sorted({where[p] for p in v.phrases})
    return phrases, by_class


__all__ = ["Vocabulary", "cache_path", "class_vocabularies", "merge", "offline_vocabulary", "parse_phrases"]
