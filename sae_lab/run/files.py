"""Every file of a run folder, named once.

A run is two folders: the SAE export (``checkpoints/<name>/sae``: ``cfg.json`` + ``sae.safetensors``) and the
report folder (``reports/<name>``) that every later stage reads and writes. :class:`RunFiles` is the only place
that spells out a path inside the report folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

GT_AUC = 0.9
"""A latent matches a primitive (and the primitive is *recovered*) at image-level ROC-AUC ≥ this (DESIGN.md)."""

NEURONS = "neurons.jsonl"
REPORT = "report.json"
SUMMARY = "summary.json"
INDEX = "index.html"
LABELS = "labels.jsonl"
EXPLANATIONS = "explanations"
EVALUATION = "evaluation.json"
SPRITES = "sprites"
EXEMPLARS = "exemplars"
LINE = "line"
LINE_SUMMARY = "summary.jsonl"
SAE_CFG = "cfg.json"
SAE_WEIGHTS = "sae.safetensors"


@dataclass(frozen=True)
class RunFiles:
    """The paths of one report folder (``reports/<run>``)."""

    root: Path
    """The report folder itself."""

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def neurons(self) -> Path:
        """One record per latent (:class:`~sae_lab.run.records.NeuronRecord`); written last by the report."""
        return self.root / NEURONS

    @property
    def report(self) -> Path:
        """The report's figures (``report.json``)."""
        return self.root / REPORT

    @property
    def summary(self) -> Path:
        """The run's figures by stage (``summary.json``)."""
        return self.root / SUMMARY

    @property
    def index(self) -> Path:
        """The report page."""
        return self.root / INDEX

    @property
    def labels(self) -> Path:
        """The stats → LLM labeller's own records (:class:`~sae_lab.run.records.LabelRecord`)."""
        return self.root / LABELS

    @property
    def explanations_dir(self) -> Path:
        """One ``<method>.jsonl`` per explanation method."""
        return self.root / EXPLANATIONS

    def explanations(self, method: str) -> Path:
        """``explanations/<method>.jsonl`` (:class:`~sae_lab.run.records.ExplanationRecord` lines)."""
        if not method or "/" in method or method.startswith("."):
            raise ValueError(f"bad explanation method name {method!r}")
        return self.explanations_dir / f"{method}.jsonl"

    def method_dir(self, method: str) -> Path:
        """A method's own folder for its details (``line/``, ``dnd/``, …)."""
        return self.root / method

    @property
    def line_dir(self) -> Path:
        return self.root / LINE

    @property
    def line_summary(self) -> Path:
        """LINE's one line per latent (:class:`~sae_lab.run.records.LineResult`)."""
        return self.line_dir / LINE_SUMMARY

    @staticmethod
    def line_page(latent: int) -> str:
        """LINE's page of one latent, relative to the report folder."""
        return f"{LINE}/{latent}/{INDEX}"

    @property
    def evaluation(self) -> Path:
        return self.root / EVALUATION

    @property
    def sprites_dir(self) -> Path:
        return self.root / SPRITES

    @property
    def exemplars_dir(self) -> Path:
        return self.root / EXEMPLARS

    @staticmethod
    def exemplar(latent: int, rank: int) -> str:
        """An exemplar PNG, relative to the report folder."""
        return f"{EXEMPLARS}/{latent:05d}/{rank:02d}.png"

    @staticmethod
    def sprite(latent: int) -> str:
        """A latent's sprite PNG, relative to the report folder."""
        return f"{SPRITES}/{latent:05d}.png"

    def has_report(self) -> bool:
        """A finished report: ``neurons.jsonl`` is moved in last."""
        return self.neurons.is_file()


def is_sae_dir(path: str | Path) -> bool:
    """``path`` holds an exported SAE (``cfg.json`` + ``sae.safetensors``)."""
    path = Path(path)
    return (path / SAE_CFG).is_file() and (path / SAE_WEIGHTS).is_file()


PATHS_KEY = "paths"
"""Key of a run file saying how its paths are recorded; its value is :data:`RELATIVE_TO_RUN`."""
RELATIVE_TO_RUN = "relative to the run folder"


def relative_to_run(path: str | os.PathLike, run_dir: str | os.PathLike) -> str:
    """``path`` as run files record it: relative to the run folder (POSIX separators), so a run folder moved or
    copied together with its checkpoints still finds them; absolute when there is no relative path (another drive)."""
    target = Path(path).resolve()
    try:
        return Path(os.path.relpath(target, Path(run_dir).resolve())).as_posix()
    except ValueError:  # another drive
        return str(target)


def from_run(recorded: str | os.PathLike, run_dir: str | os.PathLike) -> Path:
    """A path recorded by :func:`relative_to_run`, back: absolute as recorded, else taken from the run folder."""
    path = Path(recorded)
    return path if path.is_absolute() else Path(os.path.normpath(Path(run_dir).resolve() / path))
