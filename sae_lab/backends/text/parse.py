"""Parsers for LLM answers; each returns None when the answer is unusable, so the caller can retry."""

from __future__ import annotations

import re

_MARKUP = re.compile(r"[*`]+|__|^\s*[#>]+")  # emphasis, code, and leading headings or quotes
_SHORT = re.compile(r"^\s*(?:[-•]\s*)?short[\s_-]*answer\s*[:：\-–—]\s*(.*)$", re.IGNORECASE)
_EVIDENCE = re.compile(r"^\s*(?:[-•]\s*)?evidence\s*[:：\-–—]\s*(.*)$", re.IGNORECASE)
_ANSWER = re.compile(r"<\s*answer\s*>(.*?)(?:<\s*/\s*answer\s*>|<\s*answer\s*>|$)", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<\s*/?\s*[a-z_]+\s*>", re.IGNORECASE)
_QUOTES = "\"'“”‘’«»`*_"
_INLINE_EVIDENCE = re.compile(r"\s*[-–—|;,]?\s*\bevidence\s*[:：]", re.IGNORECASE)


def _clean(text: str) -> str:
    """Collapse whitespace, then strip wrapping quotes, brackets and trailing punctuation."""
    text = " ".join(text.split())
    previous = None
    while text != previous:
        previous = text
        text = text.strip().strip(_QUOTES).strip().rstrip(".!;,:").strip()
        if len(text) > 1 and text[0] + text[-1] in ("()", "[]"):
            text = text[1:-1]
    return text


def _is_placeholder(label: str) -> bool:
    """An echoed format instruction such as ``<≤ 12 words>``."""
    return label.startswith("<") and label.endswith(">")


def parse_short_answer(text: str | None, max_words: int = 12) -> tuple[str, str] | None:
    """``(label, evidence)`` from an answer of the form ``SHORT ANSWER: <label>`` / ``EVIDENCE: <line>``.

    Robust to case, markdown (``**SHORT ANSWER:**``), bullets, extra whitespace, quotes, trailing periods, the
    label on the line after the marker, and an echoed format line before the real answer. Evidence is ``""``
    when missing.

    Returns:
        None when there is no usable ``SHORT ANSWER`` or the label has more than ``max_words`` words.
    """
    if not text:
        return None
    lines = [_MARKUP.sub("", line) for line in text.splitlines()]
    label = evidence = None
    for i, line in enumerate(lines):
        short = _SHORT.match(line)
        if label is None and short:
            candidate, *inline = _INLINE_EVIDENCE.split(short.group(1), maxsplit=1)  # both on one line
            candidate = _clean(candidate)
            if inline and evidence is None:
                evidence = _clean(inline[0])
            if not candidate:  # the label may sit on the next non-empty line
                rest = [ln for ln in lines[i + 1 :] if ln.strip()]
                candidate = _clean(rest[0]) if rest and not _EVIDENCE.match(rest[0]) else ""
            if candidate and not _is_placeholder(candidate):
                label = candidate
            continue
        found = _EVIDENCE.match(line)
        if label is not None and found and evidence is None:
            evidence = _clean(found.group(1)) if not _is_placeholder(_clean(found.group(1))) else ""
    if not label or len(label.split()) > max_words:
        return None
    return label, evidence or ""


def parse_answer_tag(text: str | None, max_words: int = 3) -> str | None:
    """The concept in ``<thinking>…</thinking><answer>concept</answer>``.

    Tolerates a missing closing tag (the answer then ends at the line break), upper-case tags, text around the
    tags, quotes and trailing punctuation. The last non-empty ``<answer>`` wins.

    Returns:
        None when there is no answer, it is empty, or it has more than ``max_words`` words.
    """
    if not text:
        return None
    text = re.sub(r"<\s*thinking\s*>.*?<\s*/\s*thinking\s*>", " ", text, flags=re.IGNORECASE | re.DOTALL)
    for raw in reversed(_ANSWER.findall(text)):
        raw = raw.strip()
        if not raw:
            continue
        concept = _clean(_TAG.sub(" ", raw.splitlines()[0]))
        if not concept or len(concept.split()) > max_words:
            return None
        return concept
    return None
