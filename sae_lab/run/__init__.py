"""The run folder as one typed layer: file names (:mod:`.files`), atomic and append-only I/O (:mod:`.io`), record
dataclasses (:mod:`.records`), per-file readers and writers (:mod:`.store`), summary blocks (:mod:`.summary`) and
finding + loading a run's models (:mod:`.load`)."""

from sae_lab.run.files import GT_AUC, RunFiles, is_sae_dir
from sae_lab.run.identity import Identity, IdentityError, check_identity, keep_matching, recorded_identity
from sae_lab.run.io import JsonlAppender, atomic_write_bytes, atomic_write_text, read_json, read_jsonl, write_json
from sae_lab.run.load import DEFAULT_RUN, LoadedRun, RunPaths, check_pair, load_run, load_sae, resolve_run
from sae_lab.run.records import (
    Cost,
    ExplanationRecord,
    LabelRecord,
    LineResult,
    NeuronRecord,
    Term,
    linear_text,
)
from sae_lab.run.store import (
    DEFAULT_PREFERENCE,
    ExplanationStore,
    LabelStore,
    explanation_methods,
    neurons_by_latent,
    preferred_texts,
    read_explanations,
    read_labels,
    read_line_results,
    read_neurons,
)

__all__ = [
    "DEFAULT_PREFERENCE",
    "DEFAULT_RUN",
    "GT_AUC",
    "Cost",
    "ExplanationRecord",
    "ExplanationStore",
    "Identity",
    "IdentityError",
    "JsonlAppender",
    "LabelRecord",
    "LabelStore",
    "LineResult",
    "LoadedRun",
    "NeuronRecord",
    "RunFiles",
    "RunPaths",
    "Term",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_identity",
    "check_pair",
    "explanation_methods",
    "is_sae_dir",
    "keep_matching",
    "linear_text",
    "load_run",
    "load_sae",
    "neurons_by_latent",
    "preferred_texts",
    "read_explanations",
    "read_json",
    "read_jsonl",
    "read_labels",
    "read_line_results",
    "read_neurons",
    "recorded_identity",
    "resolve_run",
    "write_json",
]
