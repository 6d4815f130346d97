"""`python -m sae_lab explain METHOD [options]`: one explanation method over a run's latents.

Generic over the registry of :mod:`sae_lab.explainers.base`: each method's options are the fields of its
``EXPLAINER.settings`` dataclass, and its ``run`` returns the ``summary.json`` block, printed as one JSON line
(exit code 1 when the block counts ``failed`` latents: a re-run retries them).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from sae_lab.commands.framework import SettingsCommand, print_block

HELP = "explain latents with one method (labels, line, le, dnd, patches) → reports/<run>/explanations/<method>.jsonl"
PROG = "python -m sae_lab explain"
DEFAULT_METHOD = "line"
"""What ``explain --run …`` without a method runs: ``explain`` was LINE's command before there were methods."""


def find_explainer(name: str) -> Any:
    """The method's ``EXPLAINER``.

    Raises:
        ValueError: an unknown method (naming the known ones).
    """
    from sae_lab.explainers.base import get_explainer

    return get_explainer(name)


def run_method(explainer: Any, settings: Any) -> int:
    """Runs one method and prints its summary block (secrets scrubbed); 1 when some latents failed, and 1 with an
    ``error:`` line when it explained none of its latents (every call failed: nothing of it may pass for labels)."""
    from sae_lab.run.secrets import install_log_scrubber, scrub, scrub_value

    install_log_scrubber()  # a warning quoting a spec or a server's answer shows no key
    block = explainer.run(settings)
    print_block(scrub_value(block))
    if nothing_explained(block):
        n = block.get("latents", (block.get("labelled") or 0) + (block.get("failed") or 0))
        print(f"error: {explainer.name} explained none of its {n} latents"
              f"{scrub(why_failed(explainer, settings, block))}", file=sys.stderr)  # fmt: skip
        return 1
    return 1 if block.get("failed") else 0


def nothing_explained(block: dict[str, Any]) -> bool:
    """Whether a summary block says that latents were asked for and not one was explained (``explained`` of the
    block or of each of its variants; ``labelled`` for labels)."""
    if not block.get("latents") and not block.get("failed"):
        return False
    if "labelled" in block:
        return not block["labelled"] and bool(block.get("failed"))
    counts = [block["explained"]] if "explained" in block else [
        v["explained"] for v in block.values() if isinstance(v, dict) and "explained" in v]  # fmt: skip
    return bool(counts) and not any(counts)


def why_failed(explainer: Any, settings: Any, block: dict[str, Any]) -> str:
    """``": <the most frequent reason>"`` from the method's records (or the block's errors), else ``""``."""
    from collections import Counter

    from sae_lab.run import ExplanationStore

    reasons: Counter = Counter(str(v) for v in (block.get("errors") or {}).values())
    for method in explainer.methods:
        try:
            records = ExplanationStore(settings.run, method).latest().values()
        except (OSError, ValueError):
            continue
        reasons.update(r.reason for r in records if not r.ok and r.reason)
    return f": {reasons.most_common(1)[0][0]}" if reasons else ""


def method_command(name: str) -> SettingsCommand:
    """``explain NAME``'s command, from the method's settings."""
    explainer = find_explainer(name)
    return SettingsCommand(explainer.help, explainer.settings, partial(run_method, explainer), prog=f"{PROG} {name}")


@dataclass(frozen=True)
class ExplainCommand:
    """``explain METHOD ...``: dispatches to the method's command."""

    help: str = HELP
    """One line for ``python -m sae_lab --help``."""

    def methods(self) -> dict[str, str]:
        """Every available method → its help line."""
        from sae_lab.explainers.base import available

        return {name: method_command(name).help for name in available()}

    def usage(self) -> str:
        width = max(map(len, self.methods()), default=0)
        lines = "\n".join(f"  {name:<{width}}  {text}" for name, text in self.methods().items())
        return (f"usage: {PROG} METHOD [--config FILE.yaml] [options]\n\n{HELP}\n\nmethods:\n{lines}\n\n"
                f"`{PROG} METHOD --help` lists a method's options.")  # fmt: skip

    def split(self, argv: Sequence[str]) -> tuple[str | None, list[str]]:
        """``(method, its argv)``; method None for a help request."""
        argv = list(argv)
        if not argv or argv[0] in ("-h", "--help"):
            return None, argv
        if argv[0].startswith("-"):
            print(f"note: `explain` without a method runs {DEFAULT_METHOD}: `explain {DEFAULT_METHOD} …`",
                  file=sys.stderr)  # fmt: skip
            return DEFAULT_METHOD, argv
        return argv[0], argv[1:]

    def parse(self, argv: Sequence[str]) -> Any:
        """The method's settings for ``argv`` (``METHOD [options]``), checked, without running anything."""
        method, rest = self.split(argv)
        if method is None:
            raise ValueError(f"explain needs a METHOD: one of {', '.join(self.methods())}")
        return method_command(method).parse(rest)

    def call(self, argv: Sequence[str]) -> int:
        method, rest = self.split(argv)
        if method is None:
            print(self.usage())
            return 0
        return method_command(method).call(rest)


@dataclass(frozen=True)
class MethodAlias:
    """A command that is ``explain METHOD`` under another name (``label`` = ``explain labels``)."""

    method: str
    """The method it runs."""
    help: str
    """One line for ``python -m sae_lab --help``."""

    def parser(self):
        return method_command(self.method).parser()

    def parse(self, argv: Sequence[str]) -> Any:
        return method_command(self.method).parse(argv)

    def call(self, argv: Sequence[str]) -> int:
        return method_command(self.method).call(argv)
