"""One way to make a pipeline command: a settings dataclass (one docstring per field) and a function taking it.

jsonargparse builds the parser from the dataclass, so the options, their types, defaults and ``--help`` text are
the settings' own, shared with the Python API and the callbacks. Every command takes ``--config FILE.yaml`` (keys
are the field names) and ``--print_config``. On the command line a field ``batch_size`` is ``--batch-size`` (or
``--batch_size``); a bool field is ``--overwrite`` / ``--overwrite false`` / ``--no-overwrite``. A command may
name one list field ``positional``: the bare arguments then fill it (``why a.png pics/`` = ``why --images
'["a.png", "pics/"]'``), since jsonargparse builds options only.

Settings classes and run functions may be given as ``"module:attribute"`` strings, imported only when the command
runs, so ``python -m sae_lab --help`` and light commands start without torch or Lightning.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sae_lab.errors import check_config_args, check_device, check_model_source, check_template, parse_error_line

BOOL_WORDS = frozenset({"true", "false", "yes", "no", "1", "0", "on", "off", "null"})
"""Values that may follow a bool option (anything else means the bare flag, i.e. true)."""


def resolve(ref: Any) -> Any:
    """``"package.module:attr"`` → the attribute (imported now); anything else is returned as is."""
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _is_bool(action: argparse.Action) -> bool:
    from jsonargparse._typehints import ActionTypeHint

    return isinstance(action, ActionTypeHint) and action._typehint is bool


def _formatter():
    from jsonargparse import DefaultHelpFormatter

    class Formatter(DefaultHelpFormatter):
        """Shows each option once, by its dashed name (the underscore spelling is accepted too)."""

        def _format_action_invocation(self, action: argparse.Action) -> str:
            if not getattr(action, "settings_field", False):
                return super()._format_action_invocation(action)
            names = action.option_strings
            action.option_strings = [o for o in names if "_" not in o[2:]] or names[:1]
            try:
                shown = super()._format_action_invocation(action)
            finally:
                action.option_strings = names
            return shown + (f", --no-{names[0][2:]}" if _is_bool(action) else "")

    return Formatter


def _parser_class():
    from jsonargparse import ArgumentParser

    class Parser(ArgumentParser):
        """Reports a bad command line as usage, tip and one ``error:`` line (jsonargparse's can span lines)."""

        def error(self, message: str, ex: Exception | None = None):
            super().error(parse_error_line(message), ex)

    return Parser


def settings_parser(settings: type, prog: str, description: str, aliases: Mapping[str, Sequence[str]] = {},
                    required: Sequence[str] = (), positional: str | None = None):  # fmt: skip
    """A jsonargparse parser whose options are the fields of the dataclass ``settings``.

    Args:
        settings: the settings dataclass; each field's docstring becomes its help.
        prog: the program name shown in usage lines.
        description: the text above the options.
        aliases: field → extra option names (e.g. ``{"n_exemplars": ["--exemplars"]}``).
        required: fields the command line must give even though the dataclass has a default for the Python API.
        positional: a list field that the bare arguments fill (the usage line shows ``images`` as ``IMAGE [IMAGE ...]``).
    """
    import jsonargparse

    # Help from the docstring under each field (the settings' style); global, cheap enough for small dataclasses.
    jsonargparse.set_parsing_settings(docstring_parse_attribute_docstrings=True)
    one = positional.upper().removesuffix("S") if positional else ""  # images → IMAGE [IMAGE ...]
    usage = f"{prog} {one} [{one} ...] [options]" if positional else None
    parser = _parser_class()(prog=prog, description=description, formatter_class=_formatter(), usage=usage)
    parser.add_argument("--config", action="config", help="YAML file of settings (keys: the field names).")
    parser.add_class_arguments(settings, as_group=False, fail_untyped=True)
    names = {f.name for f in dataclasses.fields(settings)}
    for action in parser._actions:
        if action.dest not in names or not action.option_strings:
            continue
        primary = "--" + action.dest.replace("_", "-")
        extra = [primary] if primary not in action.option_strings else []
        extra += [a for a in aliases.get(action.dest, ()) if a not in action.option_strings]
        action.option_strings[:0] = extra[:1]  # the dashed name first: it is the one shown in --help
        action.option_strings += extra[1:]
        for option in extra:
            parser._option_string_actions[option] = action
        action.settings_field = True  # shown by its dashed names only (Formatter)
        if action.dest in required:
            action.required = True
    unknown = (set(aliases) | set(required) | ({positional} - {None})) - names
    if unknown:
        raise ValueError(f"aliases/required/positional name {sorted(unknown)}: not fields of {settings.__name__}")
    return parser


def normalise_flags(argv: Sequence[str], bools: set[str]) -> list[str]:
    """Bool options as flags: ``--overwrite`` (no value after it) → ``--overwrite=true``, ``--no-progress`` →
    ``--progress=false``; ``bools`` holds the bool fields' names (underscored)."""
    out, argv = [], list(argv)
    for i, arg in enumerate(argv):
        name = arg[2:].replace("-", "_") if arg.startswith("--") and "=" not in arg else None
        following = argv[i + 1].lower() if i + 1 < len(argv) else None
        if name in bools and (following is None or following not in BOOL_WORDS):
            out.append(f"{arg}=true")
        elif name and name.startswith("no_") and name[3:] in bools:
            out.append(f"--{name[3:]}=false")
        else:
            out.append(arg)
    return out


NO_VALUE = frozenset({"-h", "--help", "--print_config", "--print-config"})
"""Options that take no following value (``--print_config=FLAGS`` takes its flags after ``=``)."""


def gather_positionals(argv: Sequence[str], field: str) -> list[str]:
    """The bare arguments of ``argv`` (not options, not an option's value; all after ``--``) moved into one
    ``--FIELD=[JSON list]`` at the end, so that they override a ``--config`` file's list. Every option but
    :data:`NO_VALUE` takes one value: run it after :func:`normalise_flags`, which gives bool flags theirs."""
    out, bare, argv = [], [], list(argv)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            bare += argv[i + 1 :]
            break
        if not arg.startswith("-") or arg == "-":
            bare.append(arg)
        else:
            out.append(arg)
            if arg not in NO_VALUE and "=" not in arg and i + 1 < len(argv):
                out.append(argv[i + 1])
                i += 1
        i += 1
    return out + ([f"--{field}={json.dumps(bare)}"] if bare else [])


MODEL_SPEC_KINDS = ("hf", "diffusers")
"""Backend spec prefixes whose argument is a Hub id or a local path (``hf:<id or path>``, ``diffusers:<…>``)."""


def check_shared_fields(settings: Any) -> None:
    """The checks every command shares, done once when its settings are parsed, before any model is loaded: a
    ``device`` this machine has, a ``template`` with ``{concept}`` and no other placeholder, and a backend spec
    ``hf:PATH`` / ``diffusers:PATH`` whose path exists (``sae_lab.errors``; each raises UsageError or
    FileNotFoundError naming the field)."""
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if not isinstance(value, str):
            continue
        if f.name == "device":
            check_device(value)
        elif f.name == "template":
            check_template(value)
        kind, sep, arg = value.partition(":")
        if sep and kind in MODEL_SPEC_KINDS and arg:
            check_model_source(arg, f"{f.name} model")


@dataclasses.dataclass(frozen=True)
class SettingsCommand:
    """A command made of a settings dataclass and a function taking it."""

    help: str
    """One line for ``python -m sae_lab --help``."""
    settings: type | str
    """The settings dataclass, or ``"module:Class"``."""
    run: Callable[[Any], Any] | str
    """Runs the settings; returns an exit code (None: 0), or a dict that is printed (exit code 0)."""
    prog: str = "python -m sae_lab"
    """The usage line's program name."""
    aliases: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
    """Field → extra option names kept from earlier versions of the command."""
    required: Sequence[str] = ()
    """Fields the command line must give."""
    positional: str | None = None
    """A list field that the command line's bare arguments fill (``why IMAGE [IMAGE ...]``)."""

    def settings_class(self) -> type:
        return resolve(self.settings)

    def parser(self):
        return settings_parser(self.settings_class(), self.prog, self.help, self.aliases, self.required,
                               self.positional)  # fmt: skip

    def parse(self, argv: Sequence[str]) -> Any:
        """The settings the command line ``argv`` asks for, checked, without running anything (a dry run).

        Raises:
            SystemExit: an unknown option, or a value of the wrong type (the message names the field).
            ValueError: a combination the settings refuse (their ``__post_init__`` or ``check()``, and
                :func:`check_shared_fields`: device, template, model path).
        """
        check_config_args(argv)
        cls, parser = self.settings_class(), self.parser()
        names = [f.name for f in dataclasses.fields(cls)]
        bools = {a.dest for a in parser._actions if a.dest in names and _is_bool(a)}
        argv = normalise_flags(argv, bools)
        cfg = parser.parse_args(gather_positionals(argv, self.positional) if self.positional else argv)
        settings = cls(**{name: cfg[name] for name in names if name in cfg})
        check_shared_fields(settings)  # each field alone first, then the combinations
        check = getattr(settings, "check", None)
        if callable(check):
            check()
        return settings

    def call(self, argv: Sequence[str]) -> int:
        """Parses ``argv`` and runs it; errors propagate (``__main__`` turns them into one line and exit code 2)."""
        out = resolve(self.run)(self.parse(argv))
        if isinstance(out, Mapping):
            print_block(out)
            return 0
        return int(out or 0)


def print_block(block: Mapping[str, Any]) -> None:
    """A summary block as one JSON line (what the stage adds to ``summary.json``)."""
    print(json.dumps(dict(block), default=str), flush=True)
