"""Checking a numeric argument: one helper, one message shape, for every constructor that takes one.

:func:`check_number` raises ``ValueError`` naming the argument, the allowed range and the value
given, e.g. ``learning_rate must be > 0, got -1`` or ``batch_size must be an integer >= 1, got
0``; a ``hint`` (what to do instead) is appended after a semicolon.
"""

from __future__ import annotations

import math
from typing import Any


def check_number(
    name: str,
    value: Any,
    *,
    low: float,
    high: float | None = None,
    strict: bool = False,
    integer: bool = False,
    optional: bool = False,
    hint: str | None = None,
) -> None:
    """Raise ``ValueError`` unless ``value`` is a number in the allowed range.

    Args:
        name: the argument's name, as the user spells it (a constructor keyword or a CLI option).
        value: the value given.
        low: the lower bound, allowed unless ``strict``.
        high: an upper bound, never allowed (the range is ``[low, high)`` or ``(low, high)``).
        strict: the lower bound itself is refused (``> low`` instead of ``>= low``).
        integer: the value must be an ``int`` (a ``bool`` is refused); otherwise an ``int`` or a
            ``float`` that is not NaN (a ``bool`` passes as 0 or 1).
        optional: ``None`` is allowed (and said so in the message).
        hint: what to do about a bad value, appended to the message.
    """
    if optional and value is None:
        return
    kinds = (int,) if integer else (int, float)
    bad = (
        not isinstance(value, kinds)
        or (integer and isinstance(value, bool))
        or math.isnan(value)
        or value < low
        or (strict and value == low)
        or (high is not None and value >= high)
    )
    if not bad:
        return
    if high is None:
        allowed = f"{'>' if strict else '>='} {low:g}"
    else:
        allowed = f"in {'(' if strict else '['}{low:g}, {high:g})"
    if integer:
        allowed = f"an integer {allowed}"
        shown = repr(value)
    else:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        shown = f"{value:g}" if number else repr(value)
    message = f"{name} must be {allowed}{' or None' if optional else ''}, got {shown}"
    raise ValueError(f"{message}; {hint}" if hint else message)


__all__ = ["check_number"]
