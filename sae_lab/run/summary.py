"""`summary.json`: a run's figures by stage, each stage adding its block as it lands."""

from __future__ import annotations

import os
from typing import Any

from sae_lab.run.io import read_json, write_json


def read_summary(path: str | os.PathLike) -> dict[str, Any]:
    return read_json(path, default={})


def _finite(value: Any) -> Any:
    """NaN and infinities become null: JSON has no spelling for them."""
    from sae_lab.jsonable import to_jsonable

    return to_jsonable(value, strict=False)


def update_summary(path: str | os.PathLike, block: str, values: dict[str, Any]) -> dict[str, Any]:
    """Sets `block` in the summary at `path` (keeping the other blocks) and returns the whole summary."""
    summary = read_summary(path)
    summary[block] = _finite(values)
    write_json(path, summary, indent=2)
    return summary
