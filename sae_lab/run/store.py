"""Readers and writers of a run's record files: ``neurons.jsonl``, ``labels.jsonl``, ``line/summary.jsonl`` and
``explanations/<method>.jsonl``. Every stage goes through these; none opens the files itself."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

from sae_lab.run.files import RunFiles
from sae_lab.run.identity import keep_matching
from sae_lab.run.io import JsonlAppender, iter_jsonl, latest_by_latent, read_jsonl, write_jsonl
from sae_lab.run.records import ExplanationRecord, LabelRecord, LineResult, NeuronRecord

logger = logging.getLogger(__name__)


def _files(run: str | os.PathLike | RunFiles) -> RunFiles:
    return run if isinstance(run, RunFiles) else RunFiles(run)


# ------------------------------------------------------------------------------------------------ neurons.jsonl
def read_neurons(run: str | os.PathLike | RunFiles) -> list[NeuronRecord]:
    """The report's records in latent order (schema versions 1 and 2).

    Raises:
        FileNotFoundError: no finished report in the folder (says what to run first).
        ValueError: the file holds no readable record.
    """
    files = _files(run)
    if not files.neurons.is_file():
        raise FileNotFoundError(f"{files.neurons} not found: run `python -m sae_lab report --run {files.root}` first")
    out = []
    for number, obj in iter_jsonl(files.neurons):
        try:
            out.append(NeuronRecord.from_json(obj))
        except (TypeError, ValueError) as e:
            logger.warning("%s, line %d: %s; skipped", files.neurons, number, e)
    if not out:
        raise ValueError(f"{files.neurons} holds no neuron records")
    return sorted(out, key=lambda r: r.latent)


def neurons_by_latent(run: str | os.PathLike | RunFiles) -> dict[int, NeuronRecord]:
    return {r.latent: r for r in read_neurons(run)}


def write_neurons(path: str | os.PathLike, records: Iterable[NeuronRecord]) -> int:
    """``neurons.jsonl`` (atomically) at ``path``, floats to 6 decimals."""
    return write_jsonl(path, (r.to_json() for r in records), ndigits=6)


# ------------------------------------------------------------------------------------------------ labels.jsonl
def read_labels(run: str | os.PathLike | RunFiles) -> dict[int, LabelRecord]:
    """Per latent the last ``ok`` label record, else its last record."""
    rows = latest_by_latent(read_jsonl(_files(run).labels), prefer="status")
    return {k: LabelRecord.from_json(v) for k, v in rows.items()}


def label_appender(run: str | os.PathLike | RunFiles) -> JsonlAppender:
    return JsonlAppender(_files(run).labels)


# ------------------------------------------------------------------------------------------------ line/summary.jsonl
def read_line_results(run: str | os.PathLike | RunFiles) -> dict[int, LineResult]:
    """LINE's last result per latent."""
    return {k: LineResult.from_json(v) for k, v in latest_by_latent(read_jsonl(_files(run).line_summary)).items()}


def write_line_results(run: str | os.PathLike | RunFiles, results: Iterable[LineResult]) -> int:
    return write_jsonl(_files(run).line_summary, (r.to_json() for r in results))


# ------------------------------------------------------------------------------------------------ explanations
class ExplanationStore:
    """``explanations/<method>.jsonl`` of one method: appended as each latent finishes, the last record per latent
    wins, a re-run with the same settings skips what is done.

    Args:
        run: the report folder.
        method: the method's name (the file's stem).
    """

    def __init__(self, run: str | os.PathLike | RunFiles, method: str) -> None:
        self.files = _files(run)
        self.method = method
        self.path = self.files.explanations(method)
        self._appender: JsonlAppender | None = None

    def latest(self) -> dict[int, ExplanationRecord]:
        """The last record per latent, of the run's own SAE: records made for another SAE than the one
        ``report.json`` records are left out, with a warning (:func:`~sae_lab.run.identity.keep_matching`)."""
        if not self.path.is_file():
            return keep_matching(legacy_explanations(self.files, self.method), self.files, self.method)
        out = {}
        for latent, obj in latest_by_latent(read_jsonl(self.path)).items():
            try:
                out[latent] = ExplanationRecord.from_json(obj)
            except (TypeError, ValueError, KeyError) as e:
                logger.warning("%s: latent %d: %s; skipped", self.path, latent, e)
        return keep_matching(out, self.files, self.method)

    def done(self, settings_hash: str | None = None) -> set[int]:
        """Latents with a record (made with ``settings_hash`` when given); a record marked ``detail["failed"]`` (its
        calls failed: a refused token, a server down) is not done, so a re-run tries it again."""
        return {k for k, r in self.latest().items()
                if (settings_hash is None or r.settings_hash == settings_hash) and not r.detail.get("failed")}  # fmt: skip

    def append(self, records: ExplanationRecord | Sequence[ExplanationRecord]) -> None:
        """Durable appends (one fsync per call)."""
        if isinstance(records, ExplanationRecord):
            records = [records]
        for r in records:
            if r.method != self.method:
                raise ValueError(f"a {r.method!r} record does not belong in {self.path}")
        if self._appender is None:
            self._appender = JsonlAppender(self.path)
        self._appender.extend(r.to_json() for r in records)

    def compact(self) -> int:
        """Rewrites the file with the latest record per latent, in latent order."""
        self.close()
        latest = self.latest()
        if not latest:
            return 0
        return write_jsonl(self.path, (latest[k].to_json() for k in sorted(latest)))

    def close(self) -> None:
        if self._appender is not None:
            self._appender.close()
            self._appender = None

    def __enter__(self) -> ExplanationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def legacy_explanations(files: RunFiles, method: str) -> dict[int, ExplanationRecord]:
    """A run written before ``explanations/`` existed: its ``labels.jsonl`` and ``line/summary.jsonl`` read as the
    ``labels`` and ``line`` methods (other methods: nothing)."""
    if method == "labels" and files.labels.is_file():
        return {k: r.to_explanation() for k, r in read_labels(files).items()}
    if method == "line" and files.line_summary.is_file():
        return {k: r.to_explanation() for k, r in read_line_results(files).items()}
    return {}


def explanation_methods(run: str | os.PathLike | RunFiles) -> list[str]:
    """The methods with explanations in the run (``explanations/*.jsonl``, plus the labels and LINE files of a run
    written before that folder existed), sorted."""
    files = _files(run)
    folder = files.explanations_dir
    found = {p.stem for p in folder.glob("*.jsonl")} if folder.is_dir() else set()
    found |= {m for m, path in (("labels", files.labels), ("line", files.line_summary)) if path.is_file()}
    return sorted(found)


def read_explanations(run: str | os.PathLike | RunFiles, methods: Sequence[str] | None = None
                      ) -> dict[str, dict[int, ExplanationRecord]]:  # fmt: skip
    """``{method: {latent: record}}`` for every method in the run (or those named)."""
    files = _files(run)
    return {m: ExplanationStore(files, m).latest() for m in (methods or explanation_methods(files))}


DEFAULT_PREFERENCE = ("line", "dnd", "le-vlm", "patches", "labels", "le-label")
"""The order in which ``why`` and the report pick a latent's label when no method is named: methods checked
against generated evidence first, then the stats labeller."""


def preferred_texts(run: str | os.PathLike | RunFiles | None, methods: Sequence[str] | str | None = None,
                    identity: str | None = None) -> dict[int, tuple[str, str]]:  # fmt: skip
    """``{latent: (text, method)}``: per latent the first method in ``methods`` (default
    :data:`DEFAULT_PREFERENCE`, then any other method alphabetically) that explains it; only records of the SAE
    ``identity`` (an :attr:`~sae_lab.run.identity.Identity.id`; default: the one ``report.json`` records)."""
    if run is None:
        return {}
    files = _files(run)
    if isinstance(methods, str):
        methods = [methods]
    order = list(methods) if methods else [*DEFAULT_PREFERENCE]
    if not methods:
        order += [m for m in explanation_methods(files) if m not in order]
    out: dict[int, tuple[str, str]] = {}
    for method in order:
        for latent, rec in keep_matching(ExplanationStore(files, method).latest(), files, method, identity).items():
            if rec.ok and latent not in out:
                out[latent] = (rec.text.strip(), method)
    return out


class LabelStore(JsonlAppender):
    """``labels.jsonl``: durable appends, the latest record per latent (the last ``ok`` one wins), atomic
    compaction to one line per latent."""

    def latest(self) -> dict[int, dict]:
        return latest_by_latent(self.records(), prefer="status")

    def compact(self) -> int:
        """Rewrites the file atomically with :meth:`latest`, by latent id; returns the number of lines."""
        latest = self.latest()
        if not latest and not self.path.exists():
            return 0
        return self.rewrite(latest[i] for i in sorted(latest))


__all__ = [
    "DEFAULT_PREFERENCE",
    "ExplanationStore",
    "LabelStore",
    "explanation_methods",
    "label_appender",
    "neurons_by_latent",
    "preferred_texts",
    "read_explanations",
    "read_labels",
    "read_line_results",
    "read_neurons",
    "write_line_results",
    "write_neurons",
]
