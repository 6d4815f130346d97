"""The one format in which a latent's statistics travel inside a prompt.

A block is a line ``BEGIN STATS``, one line of compact JSON, and a line ``END STATS``::

    BEGIN STATS
    {"latent":3,"frequency":0.02,"top_classes":[{"class":"sun","S":2.1,"pmi":1.3,"delta":-0.4,"w":0.8}],...}
    END STATS

Keys the offline backend reads: ``latent``, ``frequency``, ``top_classes`` and ``anti_classes`` (lists of
``{"class", "S", "pmi", "delta", "w"}``), ``monosemanticity``, ``ground_truth`` (``{"primitive", "auc"}`` or null).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from sae_lab.jsonable import to_jsonable

BEGIN = "BEGIN STATS"
END = "END STATS"
_BLOCK = re.compile(rf"^[ \t]*{BEGIN}[ \t]*$(.*?)^[ \t]*{END}[ \t]*$", re.MULTILINE | re.DOTALL)


def _plain(value: Any, ndigits: int) -> Any:
    """JSON-ready copy: floats rounded, NaN/inf → None, numpy/torch scalars unwrapped, tuples → lists."""
    return to_jsonable(value, ndigits)


def format_stats_block(stats: Mapping[str, Any], ndigits: int = 3) -> str:
    """``stats`` as a stats block (no trailing newline); floats rounded to ``ndigits`` decimals."""
    body = json.dumps(_plain(stats, ndigits), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return f"{BEGIN}\n{body}\n{END}"


def parse_stats_block(text: str) -> dict[str, Any]:
    """The statistics of the last stats block in ``text`` (code fences around the JSON are tolerated).

    Raises:
        ValueError: when there is no block or its content is not a JSON object.
    """
    blocks = _BLOCK.findall(text)
    if not blocks:
        raise ValueError(f"no '{BEGIN}' … '{END}' block found")
    body = blocks[-1].strip().strip("`").strip()
    if body.startswith("json"):
        body = body[4:].strip()
    try:
        stats = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"stats block is not valid JSON: {exc}") from exc
    if not isinstance(stats, dict):
        raise ValueError("stats block must hold a JSON object")
    return stats
