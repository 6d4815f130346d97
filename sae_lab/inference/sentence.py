"""The one-sentence answer to "why this class?": a template over the top latents, optionally reworded by an LLM.

The template only states what the numbers say; a text backend may reword it, but its answer is used only when it
is one plausible sentence (otherwise the template stays), so a failing or chatty model never breaks ``why``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sae_lab.inference.lab import LatentContribution, Why
    from sae_lab.llm import TextBackend

MAX_NAMED = 3
"""Latents named in the template sentence."""
MAX_SENTENCE_CHARS = 400

SYSTEM = (
    "You explain an image classifier's decision to a non-expert in ONE short English sentence. "
    "Use only the facts given; do not invent features. Answer with the sentence only."
)


def _latent_phrase(lat: LatentContribution) -> str:
    name = f'"{lat.label}"' if lat.label else "an unnamed feature"
    return f"{name} (latent {lat.id}, {lat.contribution:+.2f})"


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def template_sentence(why: Why, max_named: int = MAX_NAMED) -> str:
    """E.g. ``It is "house" (p=0.93) mainly because of "triangle" (latent 12, +3.10) and "square" (latent 40,
    +2.21).`` Only latents that push the predicted class up are named as reasons."""
    head = f'It is "{why.predicted.name}" (p={why.predicted.prob:.2f})'
    support = [lat for lat in why.latents if lat.contribution > 0][:max_named]
    if not support:
        return f"{head}, with no single feature standing out (SAE error term {why.error_term:+.2f})."
    sentence = f"{head} mainly because of {_join([_latent_phrase(lat) for lat in support])}"
    against = [lat for lat in why.latents if lat.contribution < 0][:1]
    if against:
        sentence += f", despite {_latent_phrase(against[0])}"
    return sentence + "."


def _facts(why: Why) -> str:
    lines = [
        f"Predicted class: {why.predicted.name} (probability {why.predicted.prob:.2f}).",
        "Runner-up classes: " + ", ".join(f"{c.name} ({c.prob:.2f})" for c in why.top5[1:]) + ".",
        "Features found in the image, with their contribution to the predicted class score:",
    ]
    lines += [f"- {lat.label or 'unnamed feature'}: {lat.contribution:+.2f}" for lat in why.latents]
    lines.append(f"Draft sentence: {why.sentence or template_sentence(why)}")
    return "\n".join(lines)


def _clean(text: str | None) -> str | None:
    if not text:
        return None
    line = next((s.strip() for s in text.strip().splitlines() if s.strip()), "")
    line = line.strip().strip('"').strip()
    if not 10 <= len(line) <= MAX_SENTENCE_CHARS or line.lower().startswith(("short answer", "<", "error")):
        return None
    return line if line.endswith((".", "!")) else line + "."


def rewrite_sentences(whys: Sequence[Why], backend: TextBackend, max_new_tokens: int = 80) -> list[str]:
    """One sentence per explanation from ``backend`` (one batched ``generate``); the template where it fails."""
    from sae_lab.llm import ChatRequest

    requests = [ChatRequest.from_prompt(_facts(w), system=SYSTEM, max_new_tokens=max_new_tokens) for w in whys]
    try:
        results = backend.generate(requests)
    except Exception:  # a backend should not raise, but the explanation must not depend on it
        results = [None] * len(whys)
    out = []
    for why, result in zip(whys, results):
        text = _clean(result.text) if result is not None and result.ok else None
        out.append(text or why.sentence or template_sentence(why))
    return out
