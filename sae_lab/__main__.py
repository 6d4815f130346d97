"""`python -m sae_lab <command>`: Lightning's fit/validate/test/predict plus the pipeline's own commands."""

from __future__ import annotations

import os
import sys

from sae_lab.commands import COMMANDS
from sae_lab.errors import check_checkpoint, check_config_args, is_expected, one_line, split_debug

# Kept here rather than imported from sae_lab.cli, so that other commands start without importing Lightning.
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

USAGE = """usage: python -m sae_lab <command> [options]

Lightning commands (take --config FILE.yaml, layered, and --section.key value overrides):
  fit         train: `fit --config configs/quickstart/classifier.yaml` (the classifier) or a SAE config
  validate    run the validation loop of a config + checkpoint
  test        run the test loop
  predict     run the predict loop

Pipeline commands:
{pipeline}

Their options are their settings' fields: `--batch-size 64` (or --batch_size), bools as flags (`--overwrite`,
`--no-progress`), `--config FILE.yaml` with the same keys, and `--print_config` shows the settings a command line
makes.

`python -m sae_lab <command> --help` describes each command's options. `--debug` anywhere (or SAE_LAB_DEBUG=1)
shows the traceback of an error instead of one line.
"""


def usage() -> str:
    pipeline = "\n".join(f"  {name:<12} {cmd.help}" for name, cmd in COMMANDS.items())
    return USAGE.format(pipeline=pipeline)


def precheck_lightning(argv: list[str]) -> None:
    """Refuses a ``--ckpt_path`` that names no file before Lightning is imported (the config's own ``ckpt_path`` is
    checked by :class:`sae_lab.cli.SaeLabCLI`), and a ``--config`` file that is not YAML."""
    check_config_args(argv)
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name == "--ckpt_path":
            value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            if value and not value.startswith("-"):
                check_checkpoint(value)


def run(command: str, rest: list[str]) -> int:
    """Runs one command (no error handling: :func:`main` is the boundary)."""
    if command in LIGHTNING_COMMANDS:
        precheck_lightning(rest)  # before Lightning's import, which takes seconds
        from sae_lab.cli import lightning_main

        lightning_main([command, *rest])
        return 0
    return COMMANDS[command].call(rest)


def main(argv: list[str] | None = None) -> int:
    """The error boundary of every command: an expected failure (:func:`sae_lab.errors.is_expected`) becomes
    ``error: <one line>`` on stderr and exit code 2; ``--debug`` (anywhere) or ``SAE_LAB_DEBUG=1`` re-raises it
    with its traceback; a bug keeps its traceback."""
    debug, argv = split_debug(sys.argv[1:] if argv is None else argv)
    if debug:  # jsonargparse then raises a parse error (its traceback shown) instead of printing it and exiting
        os.environ.setdefault("JSONARGPARSE_DEBUG", "true")
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS and command not in LIGHTNING_COMMANDS:
        print(f"error: unknown command {command!r}\n", file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    from sae_lab.run.secrets import install_log_scrubber

    install_log_scrubber()  # a warning that quotes a spec or a server's answer never shows a key, in every command
    try:
        return run(command, rest)
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug or not is_expected(e):
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from sae_lab.run.secrets import scrub_streams

    scrub_streams()  # the process's own output: whatever prints a key (a library's warning, a traceback) is masked
    sys.exit(main())
