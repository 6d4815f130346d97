"""``summary.json``: a run's figures by stage, one typed block per stage, each stage adding its block as it lands.

The block types carry DESIGN.md's keys (all optional: a stage run under DDP or resumed may know fewer) plus
``extra`` for whatever else a stage reports; :func:`update_summary` checks a block against its type before writing,
so a stage cannot write a figure of the wrong kind under a DESIGN key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from sae_lab.run.io import read_json, write_json

Number = int | float | None


@dataclass
class Block:
    """Shared conversion of the stage blocks below."""

    numeric: ClassVar[tuple[str, ...]] = ()
    seconds: float | None = None
    """Wall time of the stage."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Everything else the stage reports."""

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> Block:
        """The block of ``values``.

        Raises:
            TypeError: a DESIGN key holds something other than a number (or null).
        """
        names = {f.name for f in fields(cls)} - {"extra"}
        for key in cls.numeric + ("seconds",):
            value = values.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise TypeError(f"summary block {cls.__name__}: {key} must be a number, got {value!r}")
        known = {k: v for k, v in values.items() if k in names}
        return cls(**known, extra={k: v for k, v in values.items() if k not in names})

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out = {k: v for k, v in out.items() if v is not None}
        return {**out, **self.extra}


@dataclass
class ClassifierBlock(Block):
    numeric: ClassVar[tuple[str, ...]] = ("val_acc",)
    val_acc: float | None = None


@dataclass
class SaeBlock(Block):
    numeric: ClassVar[tuple[str, ...]] = ("fvu", "l0", "dead_frac", "acc_recovered", "kl")
    fvu: float | None = None
    l0: float | None = None
    dead_frac: float | None = None
    acc_recovered: float | None = None
    kl: float | None = None


@dataclass
class ReportBlock(Block):
    numeric: ClassVar[tuple[str, ...]] = ("primitives_recovered", "primitives_total", "latents_matched")
    primitives_recovered: int | None = None
    primitives_total: int | None = None
    latents_matched: int | None = None


@dataclass
class LabelsBlock(Block):
    numeric: ClassVar[tuple[str, ...]] = ("labelled", "failed")
    labelled: int | None = None
    failed: int | None = None


@dataclass
class LineBlock(Block):
    numeric: ClassVar[tuple[str, ...]] = ("latents", "gt_named_rate", "images_generated")
    latents: int | None = None
    gt_named_rate: float | None = None
    images_generated: int | None = None


@dataclass
class MethodBlock(Block):
    """``le``, ``dnd``, ``patches``: the latents explained, the time and the method's own cost keys."""

    numeric: ClassVar[tuple[str, ...]] = ("latents",)
    latents: int | None = None


@dataclass
class EvaluationBlock(Block):
    numeric: ClassVar[tuple[str, ...]] = ("latents",)
    latents: int | None = None
    methods: dict[str, Any] | None = None
    """``{method: {cosy_auc, simulation_r, named_strict, named_lenient}}``."""


@dataclass
class WhyBlock(Block):
    numeric: ClassVar[tuple[str, ...]] = ("images", "top_latent_gt_rate")
    images: int | None = None
    top_latent_gt_rate: float | None = None


BLOCKS: dict[str, type[Block]] = {
    "classifier": ClassifierBlock, "sae": SaeBlock, "report": ReportBlock, "labels": LabelsBlock, "line": LineBlock,
    "le": MethodBlock, "dnd": MethodBlock, "patches": MethodBlock, "evaluation": EvaluationBlock, "why": WhyBlock,
}  # fmt: skip
"""summary.json's stage blocks by name (DESIGN.md); other names are written as given."""


def read_summary(path: str | os.PathLike) -> dict[str, Any]:
    """The summary at ``path`` as plain JSON (empty when there is none)."""
    return read_json(path, default={})


def read_blocks(path: str | os.PathLike) -> dict[str, Block | Any]:
    """The summary with each known stage's block typed."""
    return {k: BLOCKS[k].from_json(v) if k in BLOCKS and isinstance(v, dict) else v
            for k, v in read_summary(path).items()}  # fmt: skip


def update_summary(path: str | os.PathLike, block: str, values: Any) -> dict[str, Any]:
    """Sets ``block`` in the summary at ``path`` (keeping the other blocks) and returns the whole summary.

    Raises:
        TypeError: a known stage's block with a DESIGN key of the wrong kind.
    """
    from sae_lab.jsonable import to_jsonable

    if isinstance(values, Block):
        values = values.to_json()
    values = to_jsonable(values, strict=False)  # NaN and infinities become null: JSON has no spelling for them
    if block in BLOCKS and isinstance(values, dict):
        BLOCKS[block].from_json(values)  # checked; written as the stage gave it (its key order kept)
    summary = read_summary(path)
    summary[block] = values
    write_json(path, summary, indent=2)
    return summary


__all__ = ["BLOCKS", "Block", "read_blocks", "read_summary", "update_summary"]
