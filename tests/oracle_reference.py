"""Reference solutions of the oracle's max-weight matching, for the tests and the oracle benchmark.

- ``brute_force_matching``: every assignment, for a few users and channels.
- ``subset_dp_matching``: hapruned's first oracle, exact dynamic programming over subsets of the free
  channels: users are added one at a time and ``best[mask]`` is the largest total weight of the users
  seen so far using only channels in ``mask``. O(N · 2^K · K) per slot, so K of about 16 at most.
"""

import itertools

import numba
import numpy as np


def brute_force_matching(weight, free) -> float:
    """The largest total weight of an assignment of users to distinct free channels (or to none)."""
    n_users, n_channels = weight.shape
    options = [0] + [k + 1 for k in range(n_channels) if free[k]]
    best = 0.0
    for actions in itertools.product(options, repeat=n_users):
        used = [a for a in actions if a > 0]
        if len(used) == len(set(used)):
            best = max(best, sum(weight[n, a - 1] for n, a in enumerate(actions) if a > 0))
    return best


@numba.njit(cache=True)
def _subset_dp(weight, free, best, choice, actions):
    n_users, n_channels = weight.shape
    free_mask = 0
    for k in range(n_channels):
        if free[k]:
            free_mask |= 1 << k
    best[:] = 0.0
    for n in range(n_users):
        # masks in decreasing order read best[] of smaller masks before this user updates them
        mask = free_mask
        while True:
            chosen = -1
            value = best[mask]
            for k in range(n_channels):
                bit = 1 << k
                if mask & bit:
                    candidate = best[mask ^ bit] + weight[n, k]
                    if candidate > value:
                        value = candidate
                        chosen = k
            best[mask] = value
            choice[n, mask] = chosen
            if mask == 0:
                break
            mask = (mask - 1) & free_mask  # next smaller subset of the free channels
    mask = free_mask
    for n in range(n_users - 1, -1, -1):
        k = choice[n, mask]
        actions[n] = k + 1
        if k >= 0:
            mask ^= 1 << k
    return best[free_mask]


@numba.njit(cache=True)
def subset_dp_batch(weight, busy, actions):
    """The subset DP's matching of each environment: weight (B, N, K), busy (B, K) -> actions (B, N)."""
    n_envs, n_users, n_channels = weight.shape
    best = np.empty(1 << n_channels)
    choice = np.empty((n_users, 1 << n_channels), dtype=np.int8)
    for b in range(n_envs):
        _subset_dp(weight[b], ~busy[b], best, choice, actions[b])


def subset_dp_matching(weight, free) -> tuple[np.ndarray, float]:
    """``(actions int64[N], value)`` of the subset DP on weight (N, K) and free (K,) bool."""
    weight = np.ascontiguousarray(weight, dtype=np.float64)
    n_users, n_channels = weight.shape
    actions = np.zeros(n_users, dtype=np.int64)
    best = np.empty(1 << n_channels)
    choice = np.empty((n_users, 1 << n_channels), dtype=np.int8)
    value = _subset_dp(weight, np.asarray(free, dtype=np.bool_), best, choice, actions)
    return actions, float(value)
