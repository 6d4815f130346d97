"""What every explanation method provides, and the registry ``explain METHOD`` and the pipeline callbacks read.

A method is one sub-package of :mod:`sae_lab.explainers` exposing ``EXPLAINER``, an :class:`Explainer`:

- ``settings``: a dataclass subclassing :class:`ExplainSettings`, one docstring per field. It *is* the schema:
  ``python -m sae_lab explain METHOD --help``, ``--config FILE.yaml``, the Python API and the callbacks all
  read it.
- ``run(settings) -> dict``: explains the chosen latents of ``settings.run``, appending one
  :class:`~sae_lab.run.records.ExplanationRecord` per latent to ``explanations/<method>.jsonl`` as each finishes
  (resumable: latents already explained with the same settings hash are skipped), and returns the method's
  ``summary.json`` block (``latents``, ``seconds`` and its cost).
- ``methods``: the explanation files it writes (LE writes two: ``le-label`` and ``le-vlm``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


@dataclass
class ExplainSettings:
    """Options every explanation method shares."""

    run: str = "reports/quickstart"
    """The report folder (``reports/<name>``) or a run name."""
    latents: str = "all"
    """Latents to explain: ``all`` (every live latent), ``sample:N`` (the seeded sample evaluate scores), or ids
    such as ``0-63,70``."""
    sae: str | None = None
    """SAE export folder (default: the one the report was written from)."""
    classifier: str | None = None
    """Classifier checkpoint (default: the one recorded by the SAE)."""
    device: str | None = None
    """``cpu``, ``cuda``, … (default: CUDA when available)."""
    seed: int = 0
    """Seed of every random choice (sampling, shuffles, image seeds): the same seed gives the same explanations."""
    overwrite: bool = False
    """Explain again latents that already have an explanation made with the same settings."""

    def settings_hash(self, exclude: Sequence[str] = ("run", "latents", "device", "overwrite")) -> str:
        """Hash of the settings that change an explanation (where and which latents do not)."""
        values = {k: v for k, v in asdict(self).items() if k not in exclude}
        return hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def check(self) -> None:
        """Raises ValueError naming the field when a setting is out of range (subclasses extend it)."""
        spec = self.latents.strip()
        if spec.startswith("sample:"):
            parts = spec.split(":")
            if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts[1:]) or int(parts[1]) < 1:
                raise ValueError(f"latents: expected sample:N or sample:N:SEED with N >= 1, got {spec!r}")
        elif spec != "all":
            parse_latents(spec)


@dataclass(frozen=True)
class Explainer:
    """One explanation method."""

    name: str
    """The ``explain`` sub-command (``labels``, ``line``, ``le``, ``dnd``, ``patches``)."""
    help: str
    """One line for ``explain --help``."""
    settings: type
    """Its settings dataclass (a subclass of :class:`ExplainSettings`)."""
    run: Callable[[Any], dict]
    """Runs it; returns the ``summary.json`` block."""
    methods: tuple[str, ...]
    """The ``explanations/<method>.jsonl`` files it writes."""


EXPLAINERS: dict[str, str] = {
    "labels": "sae_lab.explainers.labels",
    "line": "sae_lab.explainers.line",
    "le": "sae_lab.explainers.le",
    "dnd": "sae_lab.explainers.dnd",
    "patches": "sae_lab.explainers.patches",
}
"""Method name → the package holding its ``EXPLAINER`` (imported only when used)."""


def available() -> list[str]:
    """The registered methods whose package exists."""
    out = []
    for name, module in EXPLAINERS.items():
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            spec = None
        if spec is not None:
            out.append(name)
    return out


def get_explainer(name: str) -> Explainer:
    """The method called ``name``.

    Raises:
        ValueError: an unknown method (naming the known ones).
    """
    if name not in EXPLAINERS or name not in available():
        raise ValueError(f"unknown explanation method {name!r}; choose one of {', '.join(available())}")
    explainer = getattr(importlib.import_module(EXPLAINERS[name]), "EXPLAINER", None)
    if explainer is None:
        raise ValueError(f"explanation method {name!r} is not ready: {EXPLAINERS[name]} exposes no EXPLAINER")
    if not isinstance(explainer, Explainer):
        raise TypeError(f"{EXPLAINERS[name]}.EXPLAINER is not an Explainer")
    return dataclasses.replace(explainer, run=_locked(explainer.run, name))


def _locked(run: Callable[[Any], dict], name: str) -> Callable[[Any], dict]:
    """``run`` holding the run folder's lock for this method: two writers of one method on one run folder would
    lose each other's records, so the second is refused with a message naming the first."""

    def locked(settings: Any) -> dict:
        from sae_lab.run.load import resolve_run
        from sae_lab.run.lock import run_lock

        folder = Path(settings.run)
        if not folder.is_dir():
            try:
                folder = resolve_run(settings.run, getattr(settings, "sae", None)).run_dir or folder
            except (FileNotFoundError, ValueError):
                pass
        if not folder.is_dir():
            return run(settings)  # the method reports the missing report itself
        with run_lock(folder, f"explain-{name}"):
            return run(settings)

    locked.__doc__ = run.__doc__
    return locked


def parse_latents(spec: str) -> list[int]:
    """``"0-63,70"`` → sorted unique ids.

    Raises:
        ValueError: for anything but comma-separated ``N`` or ``A-B`` (0 ≤ A ≤ B).
    """
    ids: set[int] = set()
    for part in str(spec).split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi if dash else lo)
        except ValueError:
            a = b = -1
        if not part or a < 0 or b < a:
            raise ValueError(f"bad latent range {part!r} in {spec!r}: expected N or A-B with 0 <= A <= B, e.g. 0-63,70")
        if b >= MAX_LATENT_ID:  # checked before the range is built: 0-99999999999 must not take the memory
            raise ValueError(f"latent {b} in {spec!r} is beyond any SAE (ids are below {MAX_LATENT_ID})")
        ids.update(range(a, b + 1))
    return sorted(ids)


def sample_live(neurons: Sequence[Any], n: int, seed: int = 0) -> list[int]:
    """A seeded random sample of ``n`` live latents (all when fewer), sorted: chosen from the report alone, never
    by how well anything explains them (``evaluate`` scores on the same sample)."""
    import numpy as np

    live = sorted(r.latent for r in neurons if not r.dead)
    if n >= len(live):
        return live
    pick = np.random.default_rng(seed).choice(len(live), size=n, replace=False)
    return sorted(live[int(i)] for i in pick)


def choose_latents(spec: str | Sequence[int], neurons: Sequence[Any]) -> list[int]:
    """The latents to explain: ``"all"`` → every live latent of the report; ``"sample:N"`` (or ``sample:N:SEED``)
    → the seeded random sample of N live latents that ``evaluate`` scores; ids must exist in the report.

    Args:
        spec: ``"all"``, ``"sample:N[:SEED]"``, an id string, or a list of ids.
        neurons: the report's :class:`~sae_lab.run.records.NeuronRecord` list.

    Raises:
        ValueError: an id the report does not have; a choice of no latent at all (refused before any method reads
            or replaces anything: ``--overwrite`` with nothing to explain must not empty a method's files).
    """
    ids = _choose(spec, neurons)
    if not ids:
        live = sum(not n.dead for n in neurons)
        raise ValueError(f"latents {spec if isinstance(spec, str) else list(spec)!r} choose no latent to explain "
                         f"(the report has {len(neurons)} latents, {live} live); nothing was changed")  # fmt: skip
    return ids


def _choose(spec: str | Sequence[int], neurons: Sequence[Any]) -> list[int]:
    known = {n.latent for n in neurons}
    if isinstance(spec, str) and spec.strip() == "all":
        return [n.latent for n in neurons if not n.dead]
    if isinstance(spec, str) and spec.strip().startswith("sample:"):
        parts = spec.strip().split(":")
        if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts[1:]) or int(parts[1]) < 1:
            raise ValueError(f"latents: expected sample:N or sample:N:SEED with N >= 1, got {spec!r}")
        return sample_live(neurons, int(parts[1]), int(parts[2]) if len(parts) == 3 else 0)
    ids = parse_latents(spec) if isinstance(spec, str) else sorted({int(i) for i in spec})
    missing = [i for i in ids if i not in known]
    if missing:
        raise ValueError(f"latents {missing[:10]} are not in the report (it has {len(known)} latents)")
    return ids


def open_report(settings: ExplainSettings) -> tuple[Any, list[Any], list[int]]:
    """What every method starts from: the run's report folder (found as :func:`~sae_lab.run.resolve_run` finds it),
    its neuron records and the latents ``settings.latents`` chooses.

    Raises:
        FileNotFoundError: no report (naming what to run first), SAE or classifier.
        ValueError: a latent the report does not have.
    """
    from sae_lab.run import RunFiles, read_neurons, resolve_run

    files = RunFiles(resolve_run(settings.run, settings.sae, settings.classifier).run_dir)
    neurons = read_neurons(files)
    return files, neurons, choose_latents(settings.latents, neurons)


MAX_LATENT_ID = 1 << 24
"""Ids at or above this are refused before any range is expanded."""


def settings_fields(settings_cls: type) -> list[str]:
    return [f.name for f in fields(settings_cls)]
