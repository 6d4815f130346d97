"""Per-image explanations: ``SaeLab.load(run).why(image)`` → predicted class, top-5, the top SAE latents with their
labels and exact logit contributions, and a one-sentence answer; the ``why`` and ``serve`` commands use it."""

from sae_lab.inference.lab import SaeLab, read_labels
from sae_lab.inference.sentence import rewrite_sentences, template_sentence
from sae_lab.inference.why import ClassScore, LatentContribution, Why
from sae_lab.run import RunPaths, resolve_run

__all__ = [
    "ClassScore",
    "LatentContribution",
    "RunPaths",
    "SaeLab",
    "Why",
    "read_labels",
    "resolve_run",
    "rewrite_sentences",
    "run_why_stage",
    "template_sentence",
]


def __getattr__(name: str):
    if name == "run_why_stage":
        from sae_lab.inference.stage import run_why_stage

        return run_why_stage
    raise AttributeError(name)
