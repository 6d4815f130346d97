"""One JSON-ready conversion for every file the pipeline writes (reports, labels, LINE, summaries)."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np


def to_jsonable(value: Any, ndigits: int | None = None, strict: bool = True) -> Any:
    """A JSON-ready copy of `value`.

    Tensors and arrays become lists, numpy scalars Python numbers, tuples lists, NaN and infinities
    None (JSON has no spelling for them); floats are rounded to `ndigits` decimals when given.

    Raises:
        TypeError: a value of another type when `strict` (otherwise it is passed through).
    """
    torch = sys.modules.get("torch")  # not imported here: a value can only be a tensor once torch is loaded
    if isinstance(value, np.ndarray) or (torch is not None and isinstance(value, torch.Tensor)):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return round(value, ndigits) if ndigits is not None else value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, ndigits, strict) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, ndigits, strict) for v in value]
    if strict:
        raise TypeError(f"cannot write {type(value).__name__} to JSON")
    return value
