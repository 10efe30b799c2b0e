"""One place for input validation used by every package.

Rules (STYLE habit 6): ``TypeError`` for a wrong type, ``ValueError`` for a bad value,
``RuntimeError`` for a wrong state. Every message names the parameter, states the rule,
shows the value that was found and, where there is one, the fix. Never ``assert``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def check_type(value: Any, types: type | tuple[type, ...], name: str) -> Any:
    """Raise ``TypeError`` unless ``value`` is an instance of ``types``.

    ``bool`` is refused where ``int`` or ``float`` is asked for, since a ``True``
    sampling rate is always a mistake.
    """
    tup = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in tup:
        ok = False
    else:
        ok = isinstance(value, tup)
    if not ok:
        expected = " or ".join(t.__name__ for t in tup)
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__} ({value!r}).")
    return value


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """Return ``value`` as float if it is a finite number > 0 (or >= 0)."""
    check_type(value, (int, float), name)
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        rule = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {rule}, got {value!r}.")
    return v


def check_int(value: Any, name: str, *, minimum: int | None = None) -> int:
    """Return ``value`` as int if it is an integer >= ``minimum``."""
    check_type(value, int, name)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_option(value: Any, options: Iterable[str], name: str) -> str:
    """Return ``value`` if it is one of ``options``."""
    opts = list(options)
    if value not in opts:
        raise ValueError(f"{name} must be one of {opts}, got {value!r}.")
    return value
