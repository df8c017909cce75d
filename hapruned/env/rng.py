"""Per-environment random streams (splitmix64), usable inside numba kernels.

Each environment owns one uint64 state, so its draws do not depend on how environments are
spread over threads: the same seed gives the same trajectories with any thread count.
"""

import numba
import numpy as np

from hapruned.validation import check_integer

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53
# The largest seed a user may give: seeds feed 64-bit generators together with offsets (e.g. a run's
# evaluation seed), so they stay below 2^63.
MAX_SEED = 2**63 - 1


@numba.njit(cache=True, inline="always")
def mix64(z):
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, inline="always")
def next_uniform(states, i):
    """Advance ``states[i]`` and return a float64 uniform in [0, 1) with 53 random bits."""
    states[i] += _GOLDEN
    return float(mix64(states[i]) >> np.uint64(11)) * _TO_UNIT


def seed_states(seed: int, count: int) -> np.ndarray:
    """Independent starting states for ``count`` streams derived from one integer seed."""
    base = np.uint64(check_integer(seed, "seed", 0, 2**64 - 1))
    with np.errstate(over="ignore"):
        index = np.arange(count, dtype=np.uint64)
        return _mix_array(_mix_array(base + _GOLDEN) ^ (index * _MIX2 + _GOLDEN))


def _mix_array(z):
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))
