"""`python -m sae_lab report --sae DIR --run DIR`: the neuron report of a trained SAE (settings:
:class:`~sae_lab.report.settings.ReportSettings`, shared with ``ReportCallback`` and ``build_report``)."""

from __future__ import annotations

HELP = "one pass of latent statistics over a dataset → reports/<run>/ (neurons.jsonl, exemplars, index.html)"
SETTINGS = "sae_lab.report.settings:ReportSettings"
ALIASES = {"n_exemplars": ("--exemplars",)}
"""Option names of earlier versions."""
REQUIRED = ("sae", "run")


def run_report_command(s) -> int:
    """Writes the report of ``s.sae`` to ``s.run`` and prints one line of its figures."""
    from sae_lab.report import run_report

    block = run_report(s.sae, s.run, classifier=s.classifier, device=s.device, **s.pass_settings())
    recovered = (
        f"{block['primitives_recovered']}/{block['primitives_total']} primitives recovered, "
        f"{block['latents_matched']} live latents matched; "
        if block["primitives_total"]
        else ""
    )
    corr = block["knockout_corr"]
    print(
        f"wrote the neuron report to {s.run}/index.html: {recovered}"
        f"knockout r = {'n/a' if corr is None else f'{corr:.3f}'}; {block['seconds']:.0f}s"
    )
    return 0
