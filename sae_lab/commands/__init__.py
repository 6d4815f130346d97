"""Registry of the pipeline's own commands (`world`, `quickstart`, …); each lives in its own module."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from sae_lab.commands import cache_tokens, explain, label, quickstart, report, serve, why, world


@dataclass(frozen=True)
class Command:
    """One `python -m sae_lab <name>` command."""

    help: str
    """One line shown by `python -m sae_lab --help`."""
    add_arguments: Callable[[argparse.ArgumentParser], None]
    """Adds the command's options to its parser."""
    run: Callable[[argparse.Namespace], int | None]
    """Runs it; returns the exit code."""


COMMANDS: dict[str, Command] = {
    "world": Command(world.HELP, world.add_arguments, world.run),
    "cache-tokens": Command(cache_tokens.HELP, cache_tokens.add_arguments, cache_tokens.run),
    "report": Command(report.HELP, report.add_arguments, report.run),
    "explain": Command(explain.HELP, explain.add_arguments, explain.run),
    "label": Command(label.HELP, label.add_arguments, label.run),
    "quickstart": Command(quickstart.HELP, quickstart.add_arguments, quickstart.run),
    "why": Command(why.HELP, why.add_arguments, why.run),
    "serve": Command(serve.HELP, serve.add_arguments, serve.run),
}
