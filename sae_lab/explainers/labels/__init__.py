"""Concept labels for SAE latents from their statistics (and exemplar images) with an LLM backend.

``label_run`` / ``run_labels`` read ``reports/<run>/neurons.jsonl`` and write ``reports/<run>/labels.jsonl``,
resumably; ``python -m sae_lab label`` is the command line.
"""

from sae_lab.explainers.labels.labeller import (
    LABELS,
    SYSTEM_PROMPT,
    Labeller,
    LabelOutcome,
    LabelRecord,
    LabelStore,
    LabelTask,
    build_prompt,
    label_run,
    load_neurons,
    make_task,
    parse_latents,
    prompt_hash,
    prompt_stats,
    run_labels,
)

__all__ = [
    "LABELS",
    "SYSTEM_PROMPT",
    "LabelOutcome",
    "LabelRecord",
    "LabelStore",
    "LabelTask",
    "Labeller",
    "build_prompt",
    "label_run",
    "load_neurons",
    "make_task",
    "parse_latents",
    "prompt_hash",
    "prompt_stats",
    "run_labels",
]
