"""One rule per kind of value, used by every config and entry point.

An integer is a Python or NumPy integer, never a bool, and at most ``MAX_INTEGER`` unless the caller
gives another maximum; a number is a finite real (int, float or their NumPy kinds), never a bool. A failed check raises ValueError saying ``NAME must be <what is allowed>,
got <value>``, with the name the caller gives (a field such as ``TrainConfig.n_users``, which the
command line turns into its flag, or an argument name).
"""

from __future__ import annotations

import difflib
import math

import numpy as np

# Counts reach torch sizes, numba kernels and int64 fields of the files hapruned writes: none of them
# holds more than a signed 64-bit integer, so no integer above it is accepted.
MAX_INTEGER = 2**63 - 1


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
    """``value`` as an int, or ValueError unless it is an integer in [minimum, maximum] (maximum:
    ``MAX_INTEGER`` when not given; the message names it only to a value above it)."""
    limit = MAX_INTEGER if maximum is None else maximum
    if is_integer(value) and _within(value, minimum, limit, False, False):
        return int(value)
    if maximum is None and is_integer(value) and value > limit:
        maximum = limit
    raise ValueError(f"{name} must be {_bounds('an integer', minimum, maximum, False, False)}, got {value!r}")


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


def did_you_mean(name: str, choices) -> str:
    """`` (did you mean 'x'?)`` naming the choice closest to a misspelt ``name``, or "" when none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
