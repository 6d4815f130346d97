"""The neuron report: one pass of latent statistics over a dataset → ``reports/<run>/`` (neurons.jsonl, exemplar
images with activation heatmaps, report.json, index.html).

``ReportCallback`` (``sae_lab.report.callback``) runs it at the end of SAE training; it is imported lazily so that
this package does not import Lightning.
"""

from sae_lab.report.analysis import Analysis, analyse
from sae_lab.report.html import render_index, write_index
from sae_lab.report.pipeline import build_report, quickstart_block, run_report
from sae_lab.report.settings import ReportSettings
from sae_lab.report.stream import StatsPass, stream_statistics
from sae_lab.run import check_pair, load_sae

__all__ = [
    "Analysis",
    "ReportCallback",
    "ReportSettings",
    "StatsPass",
    "analyse",
    "build_report",
    "check_pair",
    "load_sae",
    "quickstart_block",
    "render_index",
    "run_report",
    "stream_statistics",
    "write_index",
]


def __getattr__(name: str):
    if name == "ReportCallback":
        from sae_lab.report.callback import ReportCallback

        return ReportCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
