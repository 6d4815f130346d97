"""Reading and writing run files, in one place and with one error policy.

- Whole files are written atomically (a temporary name beside the target, fsync, rename): a crash leaves the old
  file or the new one, never half of one.
- JSON-lines files that grow as work finishes are appended with flush + fsync per record (:class:`JsonlAppender`);
  opening one repairs a partial last line left by a kill.
- Readers skip blank lines and warn once per unreadable line, naming the file and line number; a missing file
  reads as empty. Values go through :func:`~sae_lab.jsonable.to_jsonable` (NaN and infinities become null).
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sae_lab.jsonable import to_jsonable

logger = logging.getLogger(__name__)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to a temporary name beside ``path``, fsyncs and renames it: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def dumps_line(record: Any, ndigits: int | None = None) -> str:
    """One compact JSON line (no newline); NaN/inf → null, tensors and numpy values unwrapped."""
    return json.dumps(to_jsonable(record, ndigits, strict=False), separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)  # fmt: skip


def write_json(path: str | os.PathLike, value: Any, ndigits: int | None = None, indent: int = 1) -> None:
    """``value`` as an indented JSON document, atomically."""
    text = json.dumps(to_jsonable(value, ndigits, strict=False), indent=indent, ensure_ascii=False, allow_nan=False)
    atomic_write_text(path, text + "\n")


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """The JSON document at ``path``; ``default`` when it does not exist.

    Raises:
        ValueError: the file exists but is not JSON (naming the file).
    """
    path = Path(path)
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def write_jsonl(path: str | os.PathLike, records: Iterable[Any], ndigits: int | None = None) -> int:
    """One compact JSON object per line, written atomically; returns the number of lines."""
    lines = [dumps_line(r, ndigits) for r in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def _object(raw: bytes | str) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every readable object line of ``path`` (missing file: nothing).

    Blank lines are skipped; a line that is not a JSON object is skipped with a warning naming file and line.
    """
    path = Path(path)
    if not path.is_file():
        return
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            obj = _object(raw)
            if obj is None:
                logger.warning("%s, line %d: not a JSON object; skipped", path, number)
                continue
            yield number, obj


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every readable object of a JSON-lines file, in file order (see :func:`iter_jsonl`)."""
    return [obj for _, obj in iter_jsonl(path)]


def repair_tail(path: str | os.PathLike) -> int:
    """Cuts a partial last line (a kill mid-append) off ``path``, or completes it with its newline when it is a
    whole JSON object; returns the bytes dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        keep, pos = 0, size
        while pos > 0:  # the last newline, reading backwards
            step = min(1 << 16, pos)
            pos -= step
            f.seek(pos)
            cut = f.read(step).rfind(b"\n")
            if cut >= 0:
                keep = pos + cut + 1
                break
        f.seek(keep)
        if _object(f.read()) is not None:
            f.seek(size)
            f.write(b"\n")
            dropped = 0
        else:
            f.truncate(keep)
            dropped = size - keep
            logger.warning("%s: cut a partial last line (%d bytes) left by an interrupted run", path, dropped)
        f.flush()
        os.fsync(f.fileno())
    return dropped


class JsonlAppender:
    """A JSON-lines file that grows one durable record at a time.

    Opening repairs the tail (:func:`repair_tail`); :meth:`append` flushes and fsyncs before returning, so a killed
    run loses at most the record being written.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._file: io.TextIOWrapper | None = None
        self.repaired_bytes = repair_tail(self.path)

    def append(self, record: Any) -> None:
        """One line, flushed and fsynced before returning."""
        self.extend([record])

    def extend(self, records: Iterable[Any]) -> None:
        """Several lines, one fsync."""
        lines = [dumps_line(r) + "\n" for r in records]
        if not lines:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 -- kept open across appends
        self._file.writelines(lines)
        self._file.flush()
        os.fsync(self._file.fileno())

    def records(self) -> list[dict[str, Any]]:
        """Every readable record, in file order."""
        return read_jsonl(self.path)

    def rewrite(self, records: Iterable[Any]) -> int:
        """Replaces the file atomically with ``records``; returns the number of lines."""
        self.close()
        return write_jsonl(self.path, records)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def latest_by_latent(records: Iterable[Mapping[str, Any]], prefer: str | None = None) -> dict[int, dict[str, Any]]:
    """The last record per ``latent``; with ``prefer="status"``, the last record whose status is ``"ok"`` wins over
    any later failed one. Records without an integer ``latent`` are skipped."""
    out: dict[int, dict[str, Any]] = {}
    for record in records:
        latent = record.get("latent")
        if not isinstance(latent, int) or isinstance(latent, bool):
            continue
        old = out.get(latent)
        if prefer is None or record.get(prefer) == "ok" or old is None or old.get(prefer) != "ok":
            out[latent] = dict(record)
    return out
