"""The errors a user can cause, and the one place that turns such an error into one line.

Code that finds bad input raises :class:`UsageError` (or a plain ``ValueError`` / ``FileNotFoundError``) whose message
names the problem: the file, the field, the value. ``python -m sae_lab`` (:mod:`sae_lab.__main__`) catches every
:func:`is_expected` exception of every command, Lightning's included, and prints ``error: <one line>`` (exit code 2);
``--debug`` or ``SAE_LAB_DEBUG=1`` shows the traceback instead. Anything else is a bug and keeps its traceback.

Also here, because several commands share them: :func:`check_device`, :func:`check_template` and
:func:`check_model_source` (a ``hf:`` / ``diffusers:`` path that does not exist). Nothing heavy is imported at module
level: the command line imports this module before it knows whether it needs torch.
"""

from __future__ import annotations

import argparse
import errno
import os
import pickle
import re
import string
from collections.abc import Sequence
from pathlib import Path

DEBUG_FLAG = "--debug"
"""Anywhere on the command line: show the traceback of an expected error instead of one line."""
DEBUG_ENV = "SAE_LAB_DEBUG"
"""Environment variable doing the same as ``--debug`` (``1``, ``true``, ``yes``)."""
MAX_CHARS = 1000
"""Longest message printed; a longer one is cut (``--debug`` shows all of it)."""


class UsageError(ValueError):
    """Bad input the user can fix: an argument, a setting, a file named on the command line."""


class ModelFileError(UsageError):
    """A model file (SAE export, classifier checkpoint) that is missing a part, tampered, truncated, or not loadable
    without unpickling arbitrary objects."""


class RunFolderError(UsageError):
    """A run folder that lacks an earlier stage's output, or cannot be read or written."""


EXPECTED_LIBRARY_ERRORS = frozenset(
    {
        "safetensors._safetensors_rust.SafetensorError",  # a truncated or foreign .safetensors file
        "lightning.fabric.utilities.exceptions.MisconfigurationException",  # a Trainer setting Lightning refuses
        "torch.OutOfMemoryError",  # a batch too large for the device
    }
)
"""Library exceptions (``module.Class`` of the class or a base class) that mean bad input or a bad file, not a
bug; named, not imported, so that classifying an error never imports torch or Lightning."""


def _qualnames(exc: BaseException) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__}


def is_expected(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure the user can cause (bad argument, missing or bad file, unusable device) rather
    than a bug: ``ValueError`` (``UsageError``, JSON errors), the ``OSError`` family (missing file, permission,
    a folder where a file belongs, network), ``argparse.ArgumentError`` (a bad command line, raised rather than
    printed when ``JSONARGPARSE_DEBUG`` is set), ``pickle.UnpicklingError`` (a checkpoint holding Python objects),
    ``MemoryError`` and :data:`EXPECTED_LIBRARY_ERRORS`."""
    if isinstance(exc, (ValueError, OSError, pickle.UnpicklingError, MemoryError, argparse.ArgumentError)):
        return True
    return bool(_qualnames(exc) & EXPECTED_LIBRARY_ERRORS)


def _os_error(exc: OSError) -> str | None:
    """A line for an OSError that carries an errno and a file name (the ones the standard library raises)."""
    if exc.filename is None or exc.errno is None:
        return None
    name = os.fsdecode(exc.filename) if isinstance(exc.filename, (str, bytes, os.PathLike)) else str(exc.filename)
    if exc.filename2 is not None:
        name = f"{name} -> {os.fsdecode(exc.filename2)}"
    text = {
        errno.EACCES: f"permission denied: {name} (read-only, or owned by another user)",
        errno.EPERM: f"operation not permitted: {name}",
        errno.EROFS: f"read-only file system: {name}",
        errno.ENOENT: f"no such file or folder: {name}",
        errno.EISDIR: f"{name} is a folder, expected a file",
        errno.ENOTDIR: f"{name}: a part of this path is a file, expected a folder",
        errno.EEXIST: f"{name} already exists",
        errno.ENOSPC: f"no space left on the device while writing {name}",
    }.get(exc.errno)
    return text or f"{name}: {exc.strerror or exc}"


def one_line(exc: BaseException) -> str:
    """The message for an expected error, on one line (whitespace collapsed, cut at :data:`MAX_CHARS`)."""
    text = None
    if isinstance(exc, OSError):
        text = _os_error(exc)
    elif isinstance(exc, pickle.UnpicklingError):  # never repeat torch's advice to load with weights_only=False
        text = "a file is not a checkpoint sae_lab can load safely: it holds pickled Python objects (refused, not run)"
    elif isinstance(exc, MemoryError):
        text = "out of memory (a smaller --batch-size, fewer latents or images may fit)"
    elif "torch.OutOfMemoryError" in _qualnames(exc):
        text = f"the device ran out of memory (a smaller --batch-size may fit): {str(exc).splitlines()[0]}"
    elif UNION_NOISE in str(exc) and exc.__cause__ is not None and is_expected(exc.__cause__):
        return one_line(exc.__cause__)  # jsonargparse wraps the class's own error (a missing data folder, …)
    if text is None:
        text = str(exc) if not isinstance(exc, KeyError) else str(exc.args[0] if exc.args else exc)
    text = " ".join(text.split()) or type(exc).__name__
    if len(text) > MAX_CHARS:
        text = f"{text[:MAX_CHARS]}… ({len(text) - MAX_CHARS} more characters; {DEBUG_FLAG} shows all)"
    return text


def split_debug(argv: Sequence[str], environ: os._Environ | dict | None = None) -> tuple[bool, list[str]]:
    """``(debug requested, argv without --debug)``: ``--debug`` anywhere before a ``--``, or ``SAE_LAB_DEBUG``."""
    argv = list(argv)
    end = argv.index("--") if "--" in argv else len(argv)
    flagged = DEBUG_FLAG in argv[:end]
    rest = [a for i, a in enumerate(argv) if not (i < end and a == DEBUG_FLAG)]
    env = (os.environ if environ is None else environ).get(DEBUG_ENV, "").strip().lower()
    return flagged or env in ("1", "true", "yes", "on"), rest


def check_device(device: str | None, field: str = "device") -> None:
    """Raises UsageError unless ``device`` is None (the command's default) or a device this machine has.

    ``cpu`` is accepted without importing torch; anything else is parsed by ``torch.device`` and, for ``cuda`` and
    ``mps``, checked to exist (index included), so a wrong device fails before any model is loaded.
    """
    if device is None or device == "cpu":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"{field} {device!r} is not a device: use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{field} {device!r}: CUDA is not available on this machine (use --{field} cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"{field} {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"{field} {device!r}: MPS is not available on this machine (use --{field} cpu)")


def check_template(template: str, field: str = "template", allowed: Sequence[str] = ("concept",)) -> None:
    """Raises UsageError unless ``template`` is a ``str.format`` template using each of ``allowed`` and nothing
    else (``"a drawing of {concept}"``)."""
    want = ", ".join("{" + a + "}" for a in allowed)
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:  # an unmatched brace
        raise UsageError(
            f"{field} {template!r} is not a valid template ({e}); write literal braces as {{{{ }}}}"
        ) from None
    bad = [n for n in names if n not in allowed]
    if bad:
        shown = ", ".join("{" + n + "}" for n in dict.fromkeys(bad))
        raise UsageError(f"{field} {template!r} uses {shown}: the only placeholder allowed is {want}")
    missing = [a for a in allowed if a not in names]
    if missing:
        raise UsageError(f"{field} {template!r} needs the placeholder {want}")


def check_model_source(model: str, what: str = "model") -> None:
    """Raises FileNotFoundError when ``model`` is written as a local path (``/…``, ``./…``, ``../…``, ``~…``) that
    does not exist; ``transformers`` and ``diffusers`` would otherwise take it for a malformed Hub id."""
    if model.startswith(("/", ".", "~")) and not Path(model).expanduser().exists():
        raise FileNotFoundError(
            f"{what} {model!r} not found: no such local folder (a Hugging Face Hub id is written owner/name, and "
            "needs a download the first time)"
        )


CKPT_PATH_WORDS = frozenset({"best", "last", "hpc", "registry"})
"""``--ckpt_path`` values that Lightning resolves itself (not files)."""


def check_checkpoint(path: str | os.PathLike, field: str = "ckpt_path") -> None:
    """Raises UsageError unless ``path`` is an existing file, one of Lightning's :data:`CKPT_PATH_WORDS`
    (``registry:…`` too) or a remote URL (``s3://…``): a folder or a missing file named as a checkpoint."""
    text = os.fspath(path)
    if text in CKPT_PATH_WORDS or text.startswith("registry:") or "://" in text:
        return
    p = Path(text)
    if p.is_dir():
        raise UsageError(f"{field} {text!r} is a folder, expected a checkpoint file (e.g. <run>/best.ckpt)")
    if not p.is_file():
        raise UsageError(f"{field} {text!r}: no such checkpoint file")


UNION_NOISE = "Does not validate against any of the Union subtypes"
"""How jsonargparse starts a message for a value no type of an ``X | None`` accepts (then lists each type's error)."""


def _union_errors(message: str) -> str:
    """A jsonargparse union message reduced to its errors and the value (``Subtypes:``, the ``NoneType`` error and
    the value's type left out)."""
    lines = [line.strip() for line in message.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith(UNION_NOISE))
    errors, given = [], None
    for line in lines[start + 1 :]:
        if line.startswith("- ") and "<class 'NoneType'>" not in line:
            errors.append(line[2:])
        elif line.startswith("Given value:"):
            given = line.removeprefix("Given value:").strip()
    head = "\n".join(lines[:start])
    return f"{head} {'; '.join(errors) or 'no type accepts it'}" + (f" (given: {given})" if given else "")


def parse_error_line(message: str) -> str:
    """jsonargparse's message for a bad command line on one line, naming the option as typed
    (``Parser key "n_train":\\n  Expected a <class 'int'>. Got value: abc`` → ``--n_train: Expected …``)."""
    if UNION_NOISE in message:
        message = _union_errors(message)
    text = " ".join(message.split())
    return re.sub(r'Parser key "([\w.]+)":', lambda m: f"--{m.group(1)}:", text)


def check_config_args(argv: Sequence[str]) -> None:
    """Raises UsageError when a ``--config FILE`` (or ``-c``) on the command line is a file that is not YAML or not a
    mapping, naming the file and the line (jsonargparse names neither). Missing files and inline YAML strings are
    left to jsonargparse."""
    import yaml

    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name not in ("--config", "-c"):
            continue
        value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
        if not value or not Path(value).is_file():
            continue
        try:
            data = yaml.safe_load(Path(value).read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e)
            raise UsageError(f"--config {value} is not valid YAML: {problem}{where}") from None
        if data is not None and not isinstance(data, dict):
            raise UsageError(
                f"--config {value} must hold a mapping of settings (name: value), got a YAML {type(data).__name__}"
            )
