"""One rule per kind of value, used by every config and entry point.

An integer is a Python or NumPy integer, never a bool; a number is a finite real (int, float or their
NumPy kinds), never a bool. A failed check raises ValueError saying ``NAME must be <what is allowed>,
got <value>``, with the name the caller gives (a field such as ``TrainConfig.n_users``, which the
command line turns into its flag, or an argument name).
"""

from __future__ import annotations

import math

import numpy as np


def is_integer(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def is_number(value) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
            and math.isfinite(value))


def _bounds(kind: str, minimum, maximum, low_open: bool, high_open: bool) -> str:
    if minimum is not None and maximum is not None:
        return f"{kind} in {'(' if low_open else '['}{minimum}, {maximum}{')' if high_open else ']'}"
    if minimum is not None:
        return f"{kind} {'>' if low_open else '>='} {minimum}"
    if maximum is not None:
        return f"{kind} {'<' if high_open else '<='} {maximum}"
    return kind


def _within(value, minimum, maximum, low_open: bool, high_open: bool) -> bool:
    if minimum is not None and (value <= minimum if low_open else value < minimum):
        return False
    return maximum is None or (value < maximum if high_open else value <= maximum)


def check_integer(value, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int, or ValueError unless it is an integer in [minimum, maximum]."""
    if not is_integer(value) or not _within(value, minimum, maximum, False, False):
        raise ValueError(f"{name} must be {_bounds('an integer', minimum, maximum, False, False)}, got {value!r}")
    return int(value)


def check_number(value, name: str, minimum: float | None = None, maximum: float | None = None, *,
                 low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a float, or ValueError unless it is a finite number within the bounds (open where said)."""
    if not is_number(value) or not _within(value, minimum, maximum, low_open, high_open):
        raise ValueError(f"{name} must be {_bounds('a finite number', minimum, maximum, low_open, high_open)}, "
                         f"got {value!r}")
    return float(value)


def check_bool(value, name: str) -> bool:
    """``value`` as a bool, or ValueError unless it is True or False (NumPy's bools included; not 0 or 1)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(value, name: str, choices) -> str:
    """``value`` unless it is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value
