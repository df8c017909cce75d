"""The batched DSA simulator: B synchronous environments stepped by one numba kernel.

Rules (docs/design.md §1): at each slot every channel k is independently occupied by a primary user
with probability ``pu_prob[k]``. A user choosing channel k gets feedback ``-2`` if it is occupied,
otherwise ``1`` (ACK) if it is alone on k and ``-1`` (NACK) if not; idle users get ``0``. An ACK
yields ``log2(1 + snr[n, k])``, where ``snr ~ U[snr_low, snr_high]`` is drawn per user and channel at
each episode start. The shared reward is the sum over users.

The primary-user state of a slot is drawn *before* the slot (at reset, then at the end of each
step) and exposed as ``pu_busy``, so a centralised oracle can read it and tests can replay it.
``hapruned.env.reference.ReferenceDSAEnv`` states the same rules in plain NumPy, one environment
at a time; the tests require both to agree on the same draws.
"""

from __future__ import annotations

import numba
import numpy as np

from hapruned.env.config import DSAConfig
from hapruned.env.encoding import ACK, IDLE, NACK, PRIMARY_USER  # numba compiles them in as constants
from hapruned.env.rng import next_uniform, seed_states


# Each kernel exists twice over the same per-environment body: serial, and parallel over the
# environments (prange). Numba's parallel region is a fork-join whose join waits for every thread,
# so it pays only for large batches: a step of 256 environments x 10 users takes ~19 us on one
# thread and ~15 us on two of a quiet machine, but 30-130 us when other processes hold the cores
# (a worker waits for its core); 4096 environments take 257 us on one thread, 170 us on two. From
# this many agent-slots per call (environments x users), and with more than one numba thread, the
# parallel kernels run; below it the serial ones.
PARALLEL_MIN_SLOTS = 1 << 15


@numba.njit(cache=True, inline="always")
def _draw_pu(states, b, pu_prob, pu_busy):
    for k in range(pu_prob.shape[0]):
        # channels that are never occupied consume no draws, so setup A spends no time here
        pu_busy[b, k] = pu_prob[k] > 0.0 and next_uniform(states, b) < pu_prob[k]


@numba.njit(cache=True, inline="always")
def _reset_env(b, states, snr_low, snr_high, pu_prob, snr, pu_busy, obs):
    width = snr_high - snr_low
    for n in range(snr.shape[1]):
        for k in range(snr.shape[2]):
            snr[b, n, k] = snr_low + width * next_uniform(states, b)
        obs[b, n, 0] = 0
        obs[b, n, 1] = 0
    _draw_pu(states, b, pu_prob, pu_busy)


@numba.njit(cache=True)
def _reset_serial(states, snr_low, snr_high, pu_prob, snr, pu_busy, obs):
    for b in range(snr.shape[0]):
        _reset_env(b, states, snr_low, snr_high, pu_prob, snr, pu_busy, obs)


@numba.njit(cache=True, parallel=True)
def _reset_parallel(states, snr_low, snr_high, pu_prob, snr, pu_busy, obs):
    for b in numba.prange(snr.shape[0]):
        _reset_env(b, states, snr_low, snr_high, pu_prob, snr, pu_busy, obs)


@numba.njit(cache=True)
def _actions_valid(actions, n_actions):
    for b in range(actions.shape[0]):
        for n in range(actions.shape[1]):
            if actions[b, n] < 0 or actions[b, n] >= n_actions:
                return False
    return True


@numba.njit(cache=True, inline="always")
def _step_env(b, actions, draw_next, states, pu_prob, rate, pu_busy, obs, reward, throughput, observed_rate,
              difference, feedback, users, rate_sum):
    """``users[b, a]`` counts the users who chose action a and ``rate_sum[b, a]`` sums their rates on it;
    ``feedback[b, a]`` holds the code they all get."""
    n_users = actions.shape[1]
    n_channels = pu_prob.shape[0]
    for a in range(n_channels + 1):
        users[b, a] = 0
        rate_sum[b, a] = 0.0
    for n in range(n_users):
        a = actions[b, n]
        users[b, a] += 1
        rate_sum[b, a] += rate[b, n, a]
    feedback[b, 0] = IDLE
    for k in range(1, n_channels + 1):
        if pu_busy[b, k - 1]:
            feedback[b, k] = PRIMARY_USER
        else:
            feedback[b, k] = ACK if users[b, k] == 1 else NACK
    total = 0.0
    for n in range(n_users):
        # no branch per user (random actions would defeat branch prediction): a user keeps its
        # rate only on an ACK, and idle users read rate[b, n, 0] = 0
        a = actions[b, n]
        code = feedback[b, a]
        gained = rate[b, n, a] * (code == ACK)
        obs[b, n, 0] = a
        obs[b, n, 1] = code
        throughput[b, n] = gained
        observed_rate[b, n] = rate[b, n, a] * (code != PRIMARY_USER)  # the channel's rate, collided or not
        # the team reward minus the one had n stayed idle: a collision of exactly two on a free channel
        # cost the other user its ACK
        difference[b, n] = gained - (rate_sum[b, a] - rate[b, n, a]) * (code == NACK and users[b, a] == 2)
        total += gained
    reward[b] = total
    if draw_next:
        _draw_pu(states, b, pu_prob, pu_busy)


@numba.njit(cache=True)
def _step_serial(actions, draw_next, states, pu_prob, rate, pu_busy, obs, reward, throughput, observed_rate,
                 difference, feedback, users, rate_sum):
    for b in range(actions.shape[0]):
        _step_env(b, actions, draw_next, states, pu_prob, rate, pu_busy, obs, reward, throughput, observed_rate,
                  difference, feedback, users, rate_sum)


@numba.njit(cache=True, parallel=True)
def _step_parallel(actions, draw_next, states, pu_prob, rate, pu_busy, obs, reward, throughput, observed_rate,
                   difference, feedback, users, rate_sum):
    for b in numba.prange(actions.shape[0]):
        _step_env(b, actions, draw_next, states, pu_prob, rate, pu_busy, obs, reward, throughput, observed_rate,
                  difference, feedback, users, rate_sum)


def _parallel(num_envs: int, n_users: int) -> bool:
    return num_envs * n_users >= PARALLEL_MIN_SLOTS and numba.get_num_threads() > 1


class BatchedDSAEnv:
    """``num_envs`` synchronous DSA environments with preallocated buffers.

    ``reset()`` returns observations ``int64[B, N, 2]`` (last action, last feedback), all zero at the
    start of an episode. ``step(actions)`` takes ``int[B, N]`` actions in ``0..K`` and returns
    ``(obs, reward[B], throughput[B, N], done[B])``; ``throughput[b, n]`` is user n's part of the
    reward, ``log2(1 + snr)`` on an ACK and 0 otherwise. After ``horizon`` steps ``done`` is all True
    and the next call must be ``reset()``.

    With ``copy=False`` the returned arrays are the environment's own buffers, overwritten by the
    next call (faster; copy what you keep). ``snr[B, N, K]`` holds the episode's SNRs,
    ``pu_busy[B, K]`` the primary-user state of the coming slot and ``observed_rate[B, N]`` the rate
    ``log2(1 + snr)`` of each user's last transmission on a channel free of primary users, collided
    or not (0 when idle or blocked, and after ``reset``): what a user observes with
    ``config.observe_snr``. ``difference_reward[B, N]`` is the last slot's team reward minus the team
    reward had user n stayed idle, all else equal (0 after ``reset``; see ``ReferenceDSAEnv``). These
    buffers are never copied.
    """

    def __init__(self, config: DSAConfig, num_envs: int, seed: int = 0, copy: bool = True):
        if not isinstance(config, DSAConfig):
            raise TypeError(f"config must be a DSAConfig, got {type(config).__name__}")
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        self.config = config
        self.num_envs = int(num_envs)
        self.copy = copy
        shape = (self.num_envs, config.n_users)
        self._pu_prob = config.pu_probs
        self.snr = np.zeros(shape + (config.n_channels,))
        self._rate = np.zeros(shape + (config.n_actions,))  # log2(1 + snr) per action; 0 for idle, never written
        self.pu_busy = np.zeros((self.num_envs, config.n_channels), dtype=np.bool_)
        self._obs = np.zeros(shape + (2,), dtype=np.int64)
        self._reward = np.zeros(self.num_envs)
        self._throughput = np.zeros(shape)
        self.observed_rate = np.zeros(shape)
        self.difference_reward = np.zeros(shape)
        self._done = np.zeros(self.num_envs, dtype=np.bool_)
        self._feedback = np.zeros((self.num_envs, config.n_actions), dtype=np.int64)
        self._users = np.zeros((self.num_envs, config.n_actions), dtype=np.int64)
        self._rate_sum = np.zeros((self.num_envs, config.n_actions))
        self._states = seed_states(seed, self.num_envs)
        self.t = None  # slots played in the current episode; None before the first reset

    @property
    def rng_states(self) -> np.ndarray:
        """A copy of the per-environment random stream states, uint64 ``[num_envs]``: save it to resume."""
        return self._states.copy()

    @rng_states.setter
    def rng_states(self, states) -> None:
        """Set every environment's random stream (e.g. from ``rng_states`` or ``rng.seed_states``)."""
        states = np.asarray(states)
        if states.shape != (self.num_envs,) or states.dtype != np.uint64:
            raise ValueError(f"rng_states must be uint64 of shape ({self.num_envs},), got {states.dtype} {states.shape}")
        self._states = states.copy()

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start a new episode in every environment; ``seed`` restarts the random streams."""
        if seed is not None:
            self._states = seed_states(seed, self.num_envs)
        cfg = self.config
        reset = _reset_parallel if _parallel(self.num_envs, cfg.n_users) else _reset_serial
        reset(self._states, cfg.snr_low, cfg.snr_high, self._pu_prob, self.snr, self.pu_busy, self._obs)
        # NumPy's log2, like the reference env and the oracle, so the rates agree with theirs bit for
        # bit on any CPU (NumPy and numba may use different log2 routines, e.g. SVML on AVX-512)
        self._rate[..., 1:] = np.log2(1.0 + self.snr)
        self.observed_rate[:] = 0.0
        self.difference_reward[:] = 0.0
        self._done[:] = False
        self.t = 0
        return self._obs.copy() if self.copy else self._obs

    def step(self, actions):
        """Play one slot with ``actions`` int[B, N] in 0..K -> ``(obs, reward[B], throughput[B, N], done[B])``.

        Bad actions raise before anything changes, so a rejected call can be retried.
        """
        if self.t is None:
            raise RuntimeError("call reset() before step()")
        if self.t >= self.config.horizon:
            raise RuntimeError(f"the episode is over after horizon={self.config.horizon} steps; call reset()")
        actions = np.asarray(actions)
        expected = (self.num_envs, self.config.n_users)
        if actions.shape != expected:
            raise ValueError(f"actions must have shape (num_envs, n_users) = {expected}, got {actions.shape}")
        if not np.issubdtype(actions.dtype, np.integer):
            raise TypeError(f"actions must be integers in 0..{self.config.n_channels}, got dtype {actions.dtype}")
        if not _actions_valid(actions, self.config.n_actions):
            bad = actions[(actions < 0) | (actions > self.config.n_channels)]
            raise ValueError(
                f"actions must lie in 0..{self.config.n_channels} (0 = idle, k = channel k), got {bad[:5].tolist()}"
            )
        self.t += 1
        last = self.t == self.config.horizon
        step = _step_parallel if _parallel(self.num_envs, self.config.n_users) else _step_serial
        step(
            actions, not last, self._states, self._pu_prob, self._rate, self.pu_busy,
            self._obs, self._reward, self._throughput, self.observed_rate, self.difference_reward, self._feedback,
            self._users, self._rate_sum,
        )
        self._done[:] = last
        if self.copy:
            return self._obs.copy(), self._reward.copy(), self._throughput.copy(), self._done.copy()
        return self._obs, self._reward, self._throughput, self._done
