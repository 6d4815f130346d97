"""Registry of the pipeline's own commands (`world`, `report`, `explain METHOD`, …).

Each is a :class:`~sae_lab.commands.framework.SettingsCommand` (a settings dataclass + a function taking it; the
parser comes from the dataclass through jsonargparse), or ``explain``'s dispatcher to one such command per method.
Nothing heavy is imported here: the command modules import torch only inside their run functions, and other
settings and run functions are named as ``"module:attribute"`` and imported when a command runs.
"""

from __future__ import annotations

from sae_lab.commands import cache_tokens, export, quickstart, report, serve, why, world
from sae_lab.commands.explain import ExplainCommand, MethodAlias
from sae_lab.commands.framework import SettingsCommand

PROG = "python -m sae_lab"
EVALUATE_HELP = (
    "score every explanation file on the same latents with held-out evidence → reports/<run>/evaluation.json"
)

COMMANDS: dict = {
    "world": SettingsCommand(world.HELP, world.WorldSettings, world.run_world, prog=f"{PROG} world"),
    "cache-tokens": SettingsCommand(
        cache_tokens.HELP, cache_tokens.CacheTokensSettings, cache_tokens.run_cache_tokens, prog=f"{PROG} cache-tokens"
    ),
    "report": SettingsCommand(
        report.HELP,
        report.SETTINGS,
        report.run_report_command,
        prog=f"{PROG} report",
        aliases=report.ALIASES,
        required=report.REQUIRED,
    ),
    "explain": ExplainCommand(),
    "label": MethodAlias(
        "labels",
        "same as `explain labels`: name each live latent with an LLM from its statistics "
        "→ reports/<run>/explanations/labels.jsonl",
    ),
    "evaluate": SettingsCommand(
        EVALUATE_HELP, "sae_lab.evaluate:EvaluateSettings", "sae_lab.evaluate:run_evaluate", prog=f"{PROG} evaluate"
    ),
    "export": SettingsCommand(export.HELP, export.ExportSettings, export.run_export, prog=f"{PROG} export"),
    "why": SettingsCommand(why.HELP, why.WhySettings, why.run_why, prog=f"{PROG} why", positional="images"),
    "serve": SettingsCommand(serve.HELP, serve.ServeSettings, serve.run_serve, prog=f"{PROG} serve"),
    "quickstart": SettingsCommand(
        quickstart.HELP, quickstart.QuickstartSettings, quickstart.run_quickstart, prog=f"{PROG} quickstart"
    ),
}
"""Command name → command; each has ``help``, ``parse(argv)`` (settings, nothing run) and ``call(argv)``."""
