"""The one-sentence answer to "why this class?": a template over the top latents, optionally reworded by an LLM.

The template only states what the numbers say; a text backend may reword it, but its answer is used only when it
is one plausible sentence (otherwise the template stays), so a failing or chatty model never breaks ``why``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sae_lab.backends.text import TextBackend
    from sae_lab.inference.why import LatentContribution, Why

MAX_NAMED = 3
"""Concepts named in the template sentence (latents sharing a label count once)."""
MAX_SENTENCE_CHARS = 400

SYSTEM = (
    "You explain an image classifier's decision to a non-expert in ONE short English sentence. "
    "Use only the facts given; do not invent features. Answer with the sentence only."
)


def _phrase(group: list[LatentContribution]) -> str:
    name = f'"{group[0].label}"' if group[0].label else "an unnamed feature"
    ids = ", ".join(str(lat.id) for lat in group)
    return f"{name} (latent{'s' if len(group) > 1 else ''} {ids}, {_total(group):+.2f})"


def _groups(latents: Sequence[LatentContribution]) -> list[list[LatentContribution]]:
    """Latents sharing a label merged; unlabelled ones stay apart."""
    groups: dict[object, list[LatentContribution]] = {}
    for lat in latents:
        groups.setdefault(lat.label if lat.label else ("latent", lat.id), []).append(lat)
    return list(groups.values())


def _total(group: list[LatentContribution]) -> float:
    return sum(lat.contribution for lat in group)


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def template_sentence(why: Why, max_named: int = MAX_NAMED) -> str:
    """E.g. ``It is "badge" (p=0.92) mainly because of "circle" (latents 144, 105, +2.10) and "star" (latent 12,
    +0.40).`` Only latents that push the predicted class up are reasons; latents sharing a label are merged and the
    groups ordered by their summed contribution."""
    head = f'It is "{why.predicted.name}" (p={why.predicted.prob:.2f})'
    support = sorted(_groups([lat for lat in why.latents if lat.contribution > 0]), key=_total, reverse=True)
    support = support[:max_named]
    if not support:
        return f"{head}, with no single feature standing out (SAE error term {why.error_term:+.2f})."
    sentence = f"{head} mainly because of {_join([_phrase(g) for g in support])}"
    against = sorted(_groups([lat for lat in why.latents if lat.contribution < 0]), key=_total)[:1]
    if against:
        sentence += f", despite {_phrase(against[0])}"
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
    from sae_lab.backends.text import ChatRequest

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
