"""What ``why`` answers: the records of one explained prediction (``why --json`` is :meth:`Why.to_json`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class ClassScore:
    """One class with its probability."""

    index: int
    """Class index (the classifier's output unit)."""
    name: str
    """Class name (``"class"`` in JSON)."""
    prob: float
    """Softmax probability of the classifier's own logits."""

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "class": self.name, "prob": round(self.prob, 6)}


@dataclass
class LatentContribution:
    """One SAE latent's share in the predicted class logit."""

    id: int
    """Latent index in the SAE dictionary."""
    activation: float
    """Max over the image's tokens of its Top-K code (``z_max``, as the report's exemplars)."""
    mean_activation: float
    """Mean over the image's tokens of its Top-K code (``z̄``; zero on tokens where it is not in the Top-K)."""
    contribution: float
    """Exact share of the predicted class logit: ``mean_activation · w[predicted]`` (w: its logit-lens vector)."""
    label: str | None
    """The run's name for it: the text of the first explanation method that explains it, else None."""
    label_source: str | None = None
    """The explanation method the label came from (``"line"``, ``"labels"``, …) or None."""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "activation": round(self.activation, 6), "contribution": round(self.contribution, 6),
                "label": self.label}  # fmt: skip


@dataclass
class Why:
    """The explanation of one prediction.

    ``latent_sum + error_term + bias_term == logit`` (to ~1e-6); ``latents`` lists only the top ones, so their
    contributions alone do not add up to ``latent_sum``.
    """

    image: str
    """The image's name (its path when it came from a file)."""
    predicted: ClassScore
    """The classifier's top class (its own forward pass, not the SAE-spliced one)."""
    top5: list[ClassScore]
    """The five most probable classes, best first (fewer when the classifier has fewer classes)."""
    latents: list[LatentContribution]
    """The top latents, by contribution to the predicted class (largest first; see ``SaeLab.why``'s ``rank_by``)."""
    logit: float
    """The classifier's logit of the predicted class."""
    latent_sum: float
    """Sum of the contributions of all M latents (not only the listed ones)."""
    error_term: float
    """``W_out[c] · mean_t(x_t − x̂_t)``: the part of the logit the SAE reconstruction misses."""
    bias_term: float
    """``W_out[c] · (σ ⊙ b_dec + μ) + b_c``: the image-independent part (decoder bias, mean and head bias)."""
    active_latents: int
    """Latents with a non-zero Top-K code on at least one token of the image."""
    sentence: str = ""
    """One sentence saying why, from the template (or rewritten by a text backend)."""

    def to_json(self) -> dict[str, Any]:
        """The DESIGN ``why --json`` object, plus ``logit``, ``latent_sum``, ``error_term`` and ``bias_term``."""
        return {
            "image": self.image,
            "predicted": self.predicted.to_json(),
            "top5": [c.to_json() for c in self.top5],
            "latents": [lat.to_json() for lat in self.latents],
            "sentence": self.sentence,
            "logit": round(self.logit, 6),
            "latent_sum": round(self.latent_sum, 6),
            "error_term": round(self.error_term, 6),
            "bias_term": round(self.bias_term, 6),
            "active_latents": self.active_latents,
        }

    def to_text(self) -> str:
        """A readable block: prediction, top-5, the latent table, the logit split and the sentence."""
        lines = [f"{self.image}: {self.predicted.name} (p={self.predicted.prob:.3f})"]
        lines.append("  top-5   " + " · ".join(f"{c.name} {c.prob:.3f}" for c in self.top5))
        lines.append(f"  {'latent':>8}  {'activation':>10}  {'contribution':>12}  label")
        for lat in self.latents:
            label = lat.label if lat.label is not None else "–"
            lines.append(f"  {lat.id:>8}  {lat.activation:>10.3f}  {lat.contribution:>+12.3f}  {label}")
        lines.append(
            f"  logit {self.logit:.3f} = {self.active_latents} active latents {self.latent_sum:+.3f}"
            f" + SAE error {self.error_term:+.3f} + bias {self.bias_term:+.3f}"
        )
        lines.append(f"  {self.sentence}")
        return "\n".join(lines)
