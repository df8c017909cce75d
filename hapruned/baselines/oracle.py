"""The centralised oracle bound: a max-weight matching of users to free channels in every slot, and the
decentralised bound of schemes that never observe the SNRs.

The oracle knows every user's SNR on every channel and which channels primary users occupy in the
coming slot, and places at most one user on each free channel so that Σ log2(1 + β[n, k]) is largest.
No decentralised scheme can beat it slot by slot: whatever the others do, their successful users
form such a matching too.

The matching is solved exactly by the Hungarian (Kuhn–Munkres) algorithm with potentials on the
rectangular N x F matrix of the F free channels, the smaller side as rows: with non-negative weights
some maximum-weight matching pairs every row, so it is a minimum-cost assignment of the rows to
distinct columns with cost −weight. Cost O(min(N, F)² · max(N, F)) per slot.
"""

from __future__ import annotations

import numba
import numpy as np

from hapruned.baselines.base import Policy
from hapruned.env import DSAConfig


@numba.njit(cache=True)
def _assign(cost, n_rows, n_cols, row_of_col, u, v, min_reduced, way, used):
    """Minimum-cost assignment of each of n_rows rows to a distinct one of n_cols >= n_rows columns.

    cost: float, read in its [:n_rows, :n_cols] block. Writes row_of_col[1..n_cols]: the 1-based row
    assigned to each 1-based column, 0 for none. Scratch, each at least n_cols + 1 long: u, v (the
    row and column potentials), min_reduced, way (the previous column on the shortest path), used.
    Rows are added one at a time; each addition is a Dijkstra search for the cheapest augmenting
    path in reduced costs ``cost - u - v`` (non-negative on the columns reached), then the path flips.
    """
    u[: n_rows + 1] = 0.0
    v[: n_cols + 1] = 0.0
    row_of_col[: n_cols + 1] = 0
    for row in range(1, n_rows + 1):
        row_of_col[0] = row  # column 0 stands for the new row's start
        column = 0
        min_reduced[: n_cols + 1] = np.inf
        used[: n_cols + 1] = False
        while True:
            used[column] = True
            current = row_of_col[column]
            delta, next_column = np.inf, 0
            for j in range(1, n_cols + 1):
                if not used[j]:
                    reduced = cost[current - 1, j - 1] - u[current] - v[j]
                    if reduced < min_reduced[j]:
                        min_reduced[j] = reduced
                        way[j] = column
                    if min_reduced[j] < delta:
                        delta, next_column = min_reduced[j], j
            for j in range(n_cols + 1):
                if used[j]:
                    u[row_of_col[j]] += delta
                    v[j] -= delta
                else:
                    min_reduced[j] -= delta
            column = next_column
            if row_of_col[column] == 0:  # a free column: the augmenting path ends here
                break
        while column != 0:
            previous = way[column]
            row_of_col[column] = row_of_col[previous]
            column = previous


@numba.njit(cache=True)
def _match_batch(weight, busy, actions, values):
    """Max-weight matching of users to the free channels of each environment.

    weight (B, N, K) non-negative, busy (B, K) bool. Writes actions (B, N): 0 (idle) or the 1-based
    channel of each user, and values (B,): the matching's total weight.
    """
    # serial: a slot's matchings take about a microsecond each, less than waking a thread pool
    n_envs, n_users, n_channels = weight.shape
    size = max(n_users, n_channels) + 1
    cost = np.empty((min(n_users, n_channels), size - 1))
    free = np.empty(n_channels, dtype=np.int64)
    u, v, min_reduced = np.empty(size), np.empty(size), np.empty(size)
    way, row_of_col = np.empty(size, dtype=np.int64), np.empty(size, dtype=np.int64)
    used = np.empty(size, dtype=np.bool_)
    for b in range(n_envs):
        n_free = 0
        for k in range(n_channels):
            if not busy[b, k]:
                free[n_free] = k
                n_free += 1
        users_are_rows = n_users <= n_free
        n_rows, n_cols = (n_users, n_free) if users_are_rows else (n_free, n_users)
        for i in range(n_rows):
            for j in range(n_cols):
                n, f = (i, j) if users_are_rows else (j, i)
                cost[i, j] = -weight[b, n, free[f]]
        _assign(cost, n_rows, n_cols, row_of_col, u, v, min_reduced, way, used)
        total = 0.0
        actions[b, :] = 0
        for j in range(1, n_cols + 1):
            i = row_of_col[j]
            if i > 0:
                n, f = (i - 1, j - 1) if users_are_rows else (j - 1, i - 1)
                actions[b, n] = free[f] + 1
                total += weight[b, n, free[f]]
        values[b] = total


def max_weight_matching(weight: np.ndarray, free: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Assign each user at most one channel and each free channel at most one user, maximising the total weight.

    weight: (N, K) non-negative weights; free: (K,) bool, default all True. Returns
    ``(actions int64[N], value)``: 0 for an unassigned user, else its 1-based channel.
    """
    weight = np.ascontiguousarray(weight, dtype=np.float64)
    if weight.ndim != 2 or not np.all(weight >= 0):  # NaN fails too
        raise ValueError(f"weight must be a non-negative (n_users, n_channels) array, got shape {weight.shape}")
    n_users, n_channels = weight.shape
    free = np.ones(n_channels, dtype=np.bool_) if free is None else np.asarray(free, dtype=np.bool_)
    if free.shape != (n_channels,):
        raise ValueError(f"free must have shape (n_channels,) = ({n_channels},), got {free.shape}")
    actions, values = np.zeros((1, n_users), dtype=np.int64), np.zeros(1)
    _match_batch(weight[None], ~free[None], actions, values)
    return actions[0], float(values[0])


def mean_rate(snr_low: float, snr_high: float) -> float:
    """E[log2(1 + β)] for β ~ U[snr_low, snr_high], in closed form."""
    if snr_high == snr_low:
        return float(np.log2(1.0 + snr_low))

    def antiderivative(x):  # of log2(1 + x)
        return ((1.0 + x) * np.log(1.0 + x) - (1.0 + x)) / np.log(2.0)

    return float((antiderivative(snr_high) - antiderivative(snr_low)) / (snr_high - snr_low))


def decentralised_bound(config: DSAConfig) -> float:
    """The expected episode reward that no decentralised scheme which never observes the SNRs can beat.

    Such a scheme's choices do not depend on the SNRs, so each successful transmission earns
    E[log2(1 + β)] in expectation; a slot has at most one success per channel and one per user, on
    channels free of primary users, so at most the min(N, K) channels least often busy are worth
    using: ``E[log2(1 + β)] · T · Σ (1 − π_k)`` over them, i.e. min(N, K) · E[log2(1 + β)] · T · (1 − π)
    with one π for every channel (2582.6 in setup A, 2066.1 in setup B).
    """
    if not isinstance(config, DSAConfig):
        raise TypeError(f"config must be a DSAConfig, got {type(config).__name__}")
    free = np.sort(1.0 - config.pu_probs)[::-1][: min(config.n_users, config.n_channels)]
    return mean_rate(config.snr_low, config.snr_high) * config.horizon * float(free.sum())


class Oracle(Policy):
    """Centralised upper bound: reads ``env.snr`` and ``env.pu_busy`` and plays the max-weight matching
    (weight ``log2(1 + β[n, k])``) of users to the free channels of the coming slot."""

    def reset(self, num_envs, config: DSAConfig, rng: np.random.Generator) -> None:
        self._actions = np.zeros((num_envs, config.n_users), dtype=np.int64)
        self._values = np.zeros(num_envs)  # the matchings' values: the kernel writes them, the policy needs none
        self._weight = None

    def act(self, obs, throughput, env) -> np.ndarray:
        if env.t == 0 or self._weight is None:  # the SNRs are fixed within an episode
            self._weight = np.log2(1.0 + env.snr)
        _match_batch(self._weight, env.pu_busy, self._actions, self._values)
        return self._actions.copy()
