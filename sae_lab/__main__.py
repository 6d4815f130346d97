"""`python -m sae_lab <command>`: Lightning's fit/validate/test/predict plus the pipeline's own commands."""

from __future__ import annotations

import sys

from sae_lab.commands import COMMANDS

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

`python -m sae_lab <command> --help` describes each command's options.
"""


def usage() -> str:
    pipeline = "\n".join(f"  {name:<12} {cmd.help}" for name, cmd in COMMANDS.items())
    return USAGE.format(pipeline=pipeline)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_COMMANDS:
        from sae_lab.cli import lightning_main

        lightning_main([command, *rest])
        return 0
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}\n", file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    try:
        return COMMANDS[command].call(rest)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
