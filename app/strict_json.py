"""JSON as both our databases can store it: finite numbers, no NUL characters, bounded depth.

Python's :func:`json.loads` accepts ``NaN`` and ``Infinity`` (SQLite then stores them as
``null``, PostgreSQL's JSON refuses them), strings with ``\\u0000`` (PostgreSQL text
columns refuse them) and nesting until the interpreter's recursion limit. :func:`loads`
refuses all three with :class:`UnsafeJson`; :func:`check` does the same for a value
already parsed.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 32


class UnsafeJson(ValueError):
    """Valid JSON for Python, but not for Dovecote (the message says why)."""


def _reject_constant(name: str) -> Any:
    raise UnsafeJson(f"JSON constant {name} is not accepted: numbers must be finite.")


def check(value: Any) -> None:
    """Walk ``value`` iteratively: no NUL in any string or key, depth at most MAX_DEPTH."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise UnsafeJson("NUL characters (\\u0000) are not accepted in text.")
        elif isinstance(item, float) and not math.isfinite(item):
            raise UnsafeJson("Numbers must be finite (not NaN or Infinity).")
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise UnsafeJson(f"JSON nested deeper than {MAX_DEPTH} levels is not accepted.")
            if isinstance(item, dict):
                for key, child in item.items():
                    stack.append((key, depth))
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)


def loads(raw: str | bytes) -> Any:
    """Parse ``raw`` as JSON; :class:`json.JSONDecodeError` or :class:`UnsafeJson` if unfit."""
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise UnsafeJson(f"JSON nested deeper than {MAX_DEPTH} levels is not accepted.") from None
    check(value)
    return value
