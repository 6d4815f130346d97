"""The pages' template environment and their one number formatter.

Every HTML page of a run (``index.html``, LINE's per-latent pages, the evaluation section) is rendered here from
the jinja2 templates in ``sae_lab/report/templates/`` (loaded from the installed package, autoescaped), with
one shared stylesheet inlined so that each page stays one self-contained file that opens from disk. Numbers a
person reads on a page go through :func:`num` (the ``num`` filter in templates); a page's script gets them
already formatted, so there is no second formatter in JavaScript.
"""

from __future__ import annotations

import math
import numbers
import re
from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, Undefined
from markupsafe import Markup

from sae_lab.jsonable import to_jsonable

DASH = "–"
"""What a page shows for a missing or non-finite number."""

_COST_NAMES = (("llm_calls", "LLM call", "LLM calls"), ("images_generated", "image generated", "images generated"),
               ("captions", "caption", "captions"), ("vlm_images", "VLM image", "VLM images"),
               ("forward_images", "forward pass", "forward passes"))  # fmt: skip


def num(x: Any, digits: int = 3) -> str:
    """A number as a page shows it: ``digits`` decimals, scientific notation for tiny non-zero values,
    integers as they are, "–" for None, NaN and infinities (anything else as text).

    Args:
        x: the value.
        digits: decimals of a float.
    """
    if isinstance(x, float):
        if not math.isfinite(x):
            return DASH
        return f"{x:.1e}" if x != 0 and abs(x) < 10 ** (-digits) else f"{x:.{digits}f}"
    if x is None or isinstance(x, Undefined):
        return DASH
    if isinstance(x, numbers.Real) and not isinstance(x, numbers.Integral):  # numpy floats, say
        return num(float(x), digits)
    return str(x)


def count(n: float, one: str, many: str) -> str:
    """``"1 caption"``, ``"3 captions"``, ``"2.5 captions"`` (a share of work done for several latents)."""
    text = num(int(n)) if float(n).is_integer() else num(float(n), 1)
    return f"{text} {one if n == 1 else many}"


def cost_text(cost: Any) -> str:
    """An explanation's cost in words (only what it used): ``"3 LLM calls · 40 images generated · 2.1 s"``."""
    cost = cost if isinstance(cost, dict) else getattr(cost, "__dict__", {})
    parts = [count(cost[k], one, many) for k, one, many in _COST_NAMES if cost.get(k)]
    if cost.get("seconds"):
        parts.append(f"{num(float(cost['seconds']), 1)} s")
    return " · ".join(parts) or "no cost recorded"


def anchor(kind: str, name: Any) -> str:
    """An element id on a page: ``anchor("method", "le-vlm") == "method-le-vlm"``."""
    return f"{kind}-" + re.sub(r"[^A-Za-z0-9_-]+", "-", str(name))


def _json_dumps(value: Any, **kwargs: Any) -> str:
    import json

    try:
        return json.dumps(value, **kwargs)
    except (TypeError, ValueError):  # NaN / inf (JSON.parse would fail in the browser) or a tensor: converted
        return json.dumps(to_jsonable(value, strict=False), **kwargs)


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The shared environment: templates from the package, autoescape, ``num`` / ``tojson`` filters, and
    ``inline(name)`` to paste a static file (the stylesheet, a script) into a page as it is."""
    env = Environment(
        loader=PackageLoader("sae_lab.report", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = num
    env.filters["cost"] = cost_text
    env.policies["json.dumps_function"] = _json_dumps
    env.policies["json.dumps_kwargs"] = {"separators": (",", ":"), "ensure_ascii": False, "allow_nan": False}

    def inline(name: str) -> Markup:
        # A static file of the package, not a template: its braces ({ in CSS and JS) are never parsed.
        source, _, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
        return Markup(source)

    env.globals["inline"] = inline
    env.globals["anchor"] = anchor
    return env


def render(template: str, **context: Any) -> str:
    """A template of ``sae_lab/report/templates/`` rendered with ``context``."""
    return environment().get_template(template).render(**context)


def macro(template: str, name: str, *args: Any, **kwargs: Any) -> Markup:
    """One macro of a template (a chart, say) rendered on its own."""
    return Markup(getattr(environment().get_template(template).module, name)(*args, **kwargs))
