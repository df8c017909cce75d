"""The centralised oracle bound: a max-weight matching of users to free channels in every slot.

It knows every user's SNR on every channel and which channels primary users occupy in the coming
slot, and places at most one user on each free channel so that Σ log2(1 + β[n, k]) is largest.
No decentralised scheme can beat it slot by slot: whatever the others do, their successful users
form such a matching too.

The matching is solved exactly by dynamic programming over subsets of the free channels: users
are added one at a time and ``best[mask]`` is the largest total weight of the users seen so far
using only channels in ``mask``. Cost O(N · 2^K · K) per slot, so K is limited
to ``MAX_ORACLE_CHANNELS``.
"""

from __future__ import annotations

import numba
import numpy as np

from hapruned.baselines.base import Policy
from hapruned.env import DSAConfig

MAX_ORACLE_CHANNELS = 16


@numba.njit(cache=True)
def _match(weight, free, best, choice, actions):
    """Max-weight matching of users to free channels; returns its value.

    weight: (N, K) float, free: (K,) bool, scratch best: (2^K,) float and choice: (N, 2^K) int8.
    Writes actions: (N,) with 0 (idle) or the 1-based channel of each user.
    """
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
def _match_batch(weight, busy, actions):
    # serial: a slot's matchings take about a microsecond each, less than waking a thread pool
    n_envs, n_users, n_channels = weight.shape
    best = np.empty(1 << n_channels)
    choice = np.empty((n_users, 1 << n_channels), dtype=np.int8)
    for b in range(n_envs):
        _match(weight[b], ~busy[b], best, choice, actions[b])


def check_oracle_channels(n_channels: int) -> None:
    """Raise a ValueError if the exact matching would be too costly for ``n_channels``."""
    if n_channels > MAX_ORACLE_CHANNELS:
        raise ValueError(
            f"the oracle's exact matching costs O(N * 2^K * K), so it takes at most {MAX_ORACLE_CHANNELS} channels, "
            f"got {n_channels}"
        )


def max_weight_matching(weight: np.ndarray, free: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Assign each user at most one channel and each free channel at most one user, maximising the total weight.

    weight: (N, K) non-negative weights; free: (K,) bool, default all True. Returns
    ``(actions int64[N], value)``: 0 for an unassigned user, else its 1-based channel.
    """
    weight = np.ascontiguousarray(weight, dtype=np.float64)
    if weight.ndim != 2 or not np.all(weight >= 0):
        raise ValueError(f"weight must be a non-negative (n_users, n_channels) array, got shape {weight.shape}")
    n_users, n_channels = weight.shape
    check_oracle_channels(n_channels)
    free = np.ones(n_channels, dtype=np.bool_) if free is None else np.asarray(free, dtype=np.bool_)
    if free.shape != (n_channels,):
        raise ValueError(f"free must have shape (n_channels,) = ({n_channels},), got {free.shape}")
    actions = np.zeros(n_users, dtype=np.int64)
    best = np.empty(1 << n_channels)
    choice = np.empty((n_users, 1 << n_channels), dtype=np.int8)
    value = _match(weight, free, best, choice, actions)
    return actions, float(value)


class Oracle(Policy):
    """Centralised upper bound: reads ``env.snr`` and ``env.pu_busy`` and plays the max-weight matching
    (weight ``log2(1 + β[n, k])``) of users to the free channels of the coming slot."""

    def reset(self, num_envs, config: DSAConfig, rng: np.random.Generator) -> None:
        check_oracle_channels(config.n_channels)
        self._actions = np.zeros((num_envs, config.n_users), dtype=np.int64)
        self._weight = None

    def act(self, obs, throughput, env) -> np.ndarray:
        if env.t == 0 or self._weight is None:  # the SNRs are fixed within an episode
            self._weight = np.log2(1.0 + env.snr)
        _match_batch(self._weight, env.pu_busy, self._actions)
        return self._actions.copy()
