"""A backend that needs no model: it reads the stats block in the prompt and answers by rule."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sae_lab.backends.text.base import ChatRequest, GenerationResult, TextBackend
from sae_lab.backends.text.stats_block import parse_stats_block

MAX_LABEL_WORDS = 12


class OfflineBackend(TextBackend):
    """Answers ``SHORT ANSWER: <concept>`` / ``EVIDENCE: <one line>`` from the latent statistics in the prompt.

    The concept is the ground-truth primitive when one is given with ``auc >= min_gt_auc``, otherwise it is built
    from the top classes ("shared part of sun and wheel"). The evidence line starts with ``offline:`` so that
    these labels are never mistaken for a language model's. A request without a stats block fails.

    Args:
        min_gt_auc: Lowest ground-truth AUC at which the primitive becomes the label.
        num_classes: Top classes named in a class-based label.
    """

    name = "offline:stats"
    accepts_images = False

    def __init__(self, min_gt_auc: float = 0.8, num_classes: int = 2) -> None:
        self.min_gt_auc = min_gt_auc
        self.num_classes = num_classes

    def __repr__(self) -> str:
        return f"OfflineBackend(min_gt_auc={self.min_gt_auc}, num_classes={self.num_classes})"

    def generate(self, requests: Sequence[ChatRequest]) -> list[GenerationResult]:
        return [self._answer(r) for r in requests]

    def _answer(self, request: ChatRequest) -> GenerationResult:
        start = time.monotonic()
        text = "\n".join(m["content"] for m in request.messages if m["role"] == "user")
        try:
            stats = parse_stats_block(text)
            answer = f"SHORT ANSWER: {self.concept(stats)}\nEVIDENCE: {self.evidence(stats)}"
        except (ValueError, TypeError, KeyError) as exc:
            return GenerationResult(None, f"{type(exc).__name__}: {exc}", 1, time.monotonic() - start)
        return GenerationResult(text=answer, seconds=time.monotonic() - start)

    def _ground_truth(self, stats: dict[str, Any]) -> dict[str, Any] | None:
        """The best ground-truth primitive at or above the AUC threshold (one dict or a list of them)."""
        gt = stats.get("ground_truth")
        candidates = gt if isinstance(gt, list) else [gt]
        candidates = [g for g in candidates if isinstance(g, dict) and g.get("primitive") and g.get("auc") is not None]
        best = max(candidates, key=lambda g: g["auc"], default=None)
        return best if best is not None and best["auc"] >= self.min_gt_auc else None

    def concept(self, stats: dict[str, Any]) -> str:
        """The label: the ground-truth primitive, else a phrase from the top classes (≤ 12 words)."""
        gt = self._ground_truth(stats)
        if gt is not None:
            return _clip(str(gt["primitive"]))
        names = [str(c["class"]) for c in stats.get("top_classes") or [] if c.get("class")][: self.num_classes]
        if not names:
            return "unidentified pattern"
        if len(names) == 1:
            return _clip(f"part of {names[0]}")
        label = f"shared part of {', '.join(names[:-1])} and {names[-1]}"
        return label if len(label.split()) <= MAX_LABEL_WORDS else _clip(f"part of {names[0]}")

    def evidence(self, stats: dict[str, Any]) -> str:
        """One line of the figures the label rests on."""
        parts = ["offline:"]
        gt = self._ground_truth(stats)
        if gt is not None:
            parts.append(f"ground truth {gt['primitive']} (AUC {gt['auc']:.2f});")
        top = [
            f"{c['class']} (S {c['S']:.2f})" if isinstance(c.get("S"), (int, float)) else str(c["class"])
            for c in (stats.get("top_classes") or [])[:3]
        ]
        if top:
            parts.append(f"top classes {', '.join(top)};")
        anti = [str(c["class"]) for c in (stats.get("anti_classes") or [])[:2]]
        if anti:
            parts.append(f"suppresses {', '.join(anti)};")
        if isinstance(stats.get("frequency"), (int, float)):
            parts.append(f"frequency {stats['frequency']:.3g};")
        if isinstance(stats.get("monosemanticity"), (int, float)):
            parts.append(f"monosemanticity {stats['monosemanticity']:.2f}")
        return " ".join(parts).rstrip(";").replace("\n", " ")


def _clip(label: str) -> str:
    return " ".join(label.split()[:MAX_LABEL_WORDS])
