"""The records of a run's files as dataclasses, each with ``to_json`` / ``from_json``.

``from_json`` takes what older writers wrote too (``neurons.jsonl`` schema version 1 called the latent ``id``) and
ignores keys it does not know, so a newer file read by an older reader loses nothing it relied on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from sae_lab.run.secrets import scrub, scrub_value

T = TypeVar("T", bound="Record")

NEURONS_SCHEMA = 2
"""Version of ``neurons.jsonl`` / ``report.json``: 2 names the latent ``latent`` (version 1: ``id``)."""


class Record:
    """Shared ``to_json`` / ``from_json`` for the dataclasses below."""

    required: ClassVar[tuple[str, ...]] = ("latent",)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_json(cls: type[T], obj: dict[str, Any]) -> T:
        """A record from a parsed line; unknown keys are dropped, missing optional ones take their defaults.

        Raises:
            ValueError: a required key is missing or the latent is not an integer.
        """
        missing = [k for k in cls.required if k not in obj]
        if missing:
            raise ValueError(f"{cls.__name__}: missing {', '.join(missing)} in {sorted(obj)[:8]}")
        if "latent" in cls.required and (not isinstance(obj["latent"], int) or isinstance(obj["latent"], bool)):
            raise ValueError(f"{cls.__name__}: latent must be an integer, got {obj['latent']!r}")
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in obj.items() if k in names})


# ------------------------------------------------------------------------------------------------ neurons.jsonl
@dataclass
class NeuronRecord(Record):
    """One line of ``neurons.jsonl``: what the report measured for one latent (README, "neurons.jsonl")."""

    latent: int
    """Latent index."""
    frequency: float = 0.0
    """Share of the split's tokens on which the latent fires (Top-K code)."""
    image_frequency: float = 0.0
    """Share of images with a token on which it fires."""
    dense_frequency: float = 0.0
    """The same for the dense code ReLU(pre) > 0."""
    dense_image_frequency: float = 0.0
    mean_act: float | None = None
    """Mean dense activation over the tokens where it is > 0."""
    tau: float | None = None
    """τ: the quantile of z_max over images used for "on"."""
    n_on: int = 0
    """On-images: z_max ≥ τ and z_max > 0."""
    mean_on_zavg: float | None = None
    dead: bool = False
    """Never fires on the split."""
    top_classes: list[dict[str, Any]] = field(default_factory=list)
    """The 5 classes with the largest ranking S: ``{class, index, S, pmi, delta, delta_measured, w, n_on}``."""
    anti_classes: list[dict[str, Any]] = field(default_factory=list)
    monosemanticity: float = 0.0
    exemplars: list[dict[str, Any]] = field(default_factory=list)
    """Top images by z_max: ``{image, id, z_max, label, class}`` (``id``: the image's row)."""
    sprite: str | None = None
    ground_truth: dict[str, Any] | None = None
    """Sketch world: ``{primitive, image_auc, token_auc, all: {primitive: image_auc}}``."""
    stats_block: dict[str, Any] = field(default_factory=dict)
    schema: int = NEURONS_SCHEMA

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> NeuronRecord:
        if "latent" not in obj and "id" in obj:  # schema version 1
            obj = {**obj, "latent": obj["id"]}
            obj.pop("id")
            obj.setdefault("schema", 1)
        return super().from_json(obj)

    @property
    def live(self) -> bool:
        return not self.dead

    @property
    def top_class(self) -> str | None:
        """The class with the largest S (None for a latent without classes)."""
        return self.top_classes[0]["class"] if self.top_classes else None

    @property
    def gt_primitive(self) -> str | None:
        return (self.ground_truth or {}).get("primitive")

    @property
    def gt_auc(self) -> float | None:
        return (self.ground_truth or {}).get("image_auc")


# ------------------------------------------------------------------------------------------------ labels.jsonl
@dataclass
class LabelRecord(Record):
    """One line of ``labels.jsonl`` (the stats → LLM labeller's own detail)."""

    latent: int
    label: str | None = None
    """The concept (≤ 12 words), None when the latent failed."""
    evidence: str | None = None
    """The model's one-line justification ("" when it gave none), None when failed."""
    source: str = ""
    """The backend's name, model included (a valid ``--llm`` spec)."""
    prompt_hash: str = ""
    status: str = "ok"
    """``"ok"`` or ``"failed"``."""
    error: str | None = None
    """Why it failed (secrets masked), None when ok."""
    attempts: int = 0
    """Requests sent for this latent, the backend's own transport retries included."""
    seconds: float = 0.0
    """Time its requests took (summed over attempts)."""

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["source"], out["error"] = scrub(self.source), scrub(self.error)  # a spec or error never carries a key
        return out

    def to_explanation(self) -> ExplanationRecord:
        """This label in the one explanation schema (method ``labels``)."""
        cost = Cost(llm_calls=self.attempts, seconds=self.seconds)
        common = {"cost": cost, "backends": {"llm": self.source}, "settings_hash": self.prompt_hash[:12]}
        if self.status != "ok" or not self.label:
            return ExplanationRecord.single(self.latent, "labels", None, reason=self.error or "no label", **common)
        return ExplanationRecord.single(self.latent, "labels", self.label, detail={"evidence": self.evidence}, **common)


# ------------------------------------------------------------------------------------------------ line/summary.jsonl
@dataclass
class LineResult(Record):
    """One line of ``line/summary.jsonl``: LINE's outcome for one latent."""

    latent: int
    best_concept: str | None = None
    best_score: float | None = None
    metric: str = "auc"
    pool: list[dict[str, Any]] = field(default_factory=list)
    """The final pool, best first: ``{concept, score, ...}``."""
    proposals: int = 0
    images: int = 0
    """Images generated for this latent's concepts (cached ones included)."""
    ground_truth: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else the loop records."""

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> LineResult:
        names = {f.name for f in fields(cls)}
        extra = {k: v for k, v in obj.items() if k not in names}
        rec = super().from_json(obj)
        rec.extra = {**rec.extra, **extra}
        return rec

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        extra = out.pop("extra")
        return {**extra, **out}

    def to_explanation(self, settings_hash: str = "", backends: dict[str, Any] | None = None,
                       cost: Cost | None = None) -> ExplanationRecord:  # fmt: skip
        """LINE's best concept in the one explanation schema (method ``line``; the pool as candidates)."""
        candidates = [{"concept": c.get("concept"), "score": c.get("score")} for c in self.pool if isinstance(c, dict)]
        cost = cost or Cost(images_generated=int(self.images or 0))
        common = {"candidates": candidates, "cost": cost, "backends": dict(backends or {}),
                  "settings_hash": settings_hash, "detail": {"metric": self.metric, "score": self.best_score}}  # fmt: skip
        if not self.best_concept:
            return ExplanationRecord.single(self.latent, "line", None, reason="no concept", **common)
        if not isinstance(self.best_score, (int, float)) or self.best_score != self.best_score:  # None or NaN
            return ExplanationRecord.single(self.latent, "line", None, reason="no concept could be scored: every "
                                            "image of its concepts failed", **common)  # fmt: skip
        return ExplanationRecord.single(self.latent, "line", self.best_concept, **common)


# ------------------------------------------------------------------------------------------------ explanations
@dataclass
class Term:
    """One concept of an explanation and its weight (1 for single-concept methods)."""

    concept: str
    weight: float = 1.0


@dataclass
class Cost:
    """What explaining one latent cost, shared work split evenly among the latents that used it."""

    llm_calls: int = 0
    images_generated: int = 0
    captions: int = 0
    vlm_images: int = 0
    forward_images: int = 0
    seconds: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


@dataclass
class ExplanationRecord(Record):
    """One line of ``explanations/<method>.jsonl`` (DESIGN.md, "Explanations: one schema, many methods")."""

    latent: int
    method: str
    """``labels``, ``line``, ``le-label``, ``le-vlm``, ``dnd``, ``patches``, …"""
    text: str | None
    """What a person reads: ``"circle"``, ``"0.62*circle + 0.21*spokes + 0.05"``; None when no explanation."""
    terms: list[Term] = field(default_factory=list)
    """The concepts and weights (single-concept methods: one term, weight 1)."""
    bias: float | None = None
    """Linear explanations only."""
    candidates: list[dict[str, Any]] = field(default_factory=list)
    """The method's own ranking: ``{concept, score}`` (LINE pool, DnD top 3, …)."""
    cost: Cost = field(default_factory=Cost)
    backends: dict[str, Any] = field(default_factory=dict)
    """The backends used, by role (``llm``, ``images``, ``perception``, ``captioner``), as specs: never a secret."""
    settings_hash: str = ""
    """Hash of the settings that produced it: a re-run with other settings redoes the latent."""
    reason: str | None = None
    """Why there is no explanation (``text`` None), e.g. ``"latent never fires"``."""
    detail: dict[str, Any] = field(default_factory=dict)
    """Method-specific extras (LE's select-split r, DnD's crops, …)."""

    required: ClassVar[tuple[str, ...]] = ("latent", "method", "text")

    @property
    def ok(self) -> bool:
        """An explanation to use: it has text, is not marked ``failed``, and a score it records (LINE's
        ``detail["score"]``) is a number: a concept no image could score is no label."""
        if not self.text or self.detail.get("failed"):
            return False
        if "score" in self.detail:
            score = self.detail["score"]
            return isinstance(score, (int, float)) and score == score  # not None, not NaN
        return True

    @property
    def concepts(self) -> list[str]:
        return [t.concept for t in self.terms]

    @property
    def main_concept(self) -> str | None:
        """The largest-weight term (CoSy scores a linear explanation on it), else the text."""
        if self.terms:
            return max(self.terms, key=lambda t: t.weight).concept
        return self.text

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["terms"] = [dataclasses.asdict(t) for t in self.terms]
        out["cost"] = dataclasses.asdict(self.cost)
        out["backends"] = scrub_value(self.backends)  # specs as given may hold a key (http://u:KEY@host)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ExplanationRecord:
        rec = super().from_json(obj)
        rec.backends = scrub_value(rec.backends) if isinstance(rec.backends, dict) else {}  # files from before
        rec.terms = [t if isinstance(t, Term) else Term(str(t["concept"]), float(t.get("weight", 1.0)))
                     for t in rec.terms or []]  # fmt: skip
        if isinstance(rec.cost, dict):
            known = {f.name for f in fields(Cost)}
            rec.cost = Cost(**{k: v for k, v in rec.cost.items() if k in known})
        return rec

    @staticmethod
    def single(latent: int, method: str, concept: str | None, **kwargs: Any) -> ExplanationRecord:
        """A single-concept explanation (one term of weight 1), or none with a ``reason``."""
        terms = [Term(concept, 1.0)] if concept else []
        return ExplanationRecord(latent, method, concept or None, terms=terms, **kwargs)


def linear_text(terms: list[Term], bias: float | None) -> str:
    """``"4.24*circle + 2.74*spokes + 0.33"``: weights to 2 decimals, descending, then the bias."""
    parts = [f"{t.weight:.2f}*{t.concept}" for t in sorted(terms, key=lambda t: -t.weight)]
    if bias is not None:
        parts.append(f"{bias:.2f}")
    text = " + ".join(parts)
    return text.replace("+ -", "- ")
