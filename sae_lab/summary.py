"""`summary.json`: a run's figures by stage, each stage adding its block as it lands."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to a temporary name beside `path` and renames it: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_summary(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else {}


def _finite(value: Any) -> Any:
    """NaN and infinities become null: JSON has no spelling for them."""
    from sae_lab.jsonable import to_jsonable

    return to_jsonable(value, strict=False)


def update_summary(path: str | os.PathLike, block: str, values: dict[str, Any]) -> dict[str, Any]:
    """Sets `block` in the summary at `path` (keeping the other blocks) and returns the whole summary."""
    summary = read_summary(path)
    summary[block] = _finite(values)
    atomic_write_text(path, json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return summary
