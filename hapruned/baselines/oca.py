"""The opportunistic channel-aware (OCA) policy: Aloha timing, channels chosen by learned value."""

from __future__ import annotations

import numpy as np

from hapruned.baselines.aloha import optimal_aloha_p
from hapruned.baselines.base import Policy, check_probability
from hapruned.env import DSAConfig


class OpportunisticChannelAware(Policy):
    """Each user learns the value of each channel from its own feedback and transmits on the best one.

    The exact rule, per user n (no information is shared between users):

    - ``value[n, k]`` estimates the throughput user n gets per attempt on channel k, i.e. success
      rate × ``log2(1 + SNR[n, k])``. It starts optimistic at ``log2(1 + snr_high)``, so every
      channel gets tried. After each attempt on channel k it moves towards what the attempt gave
      (``log2(1 + SNR)`` on an ACK, 0 on a NACK or a primary user):
      ``value[n, k] += step_size * (throughput - value[n, k])``, an exponential average that
      follows the other users as they move.
    - Each slot the user transmits with probability ``p`` (default: the Aloha-optimal
      ``min(1, K/N)``; with N > K always transmitting would guarantee collisions). When it
      transmits it picks, with probability ``explore``, a uniformly random channel, otherwise the
      channel of highest value (ties broken uniformly at random).
    - Estimates start afresh in every episode, since the SNRs are redrawn.
    """

    def __init__(self, p: float | None = None, step_size: float = 0.2, explore: float = 0.05):
        self.p = None if p is None else check_probability("oca p", p, low_open=True)
        self.step_size = check_probability("oca step_size", step_size, low_open=True)
        self.explore = check_probability("oca explore", explore)

    def reset(self, num_envs, config: DSAConfig, rng: np.random.Generator) -> None:
        self._p = optimal_aloha_p(config.n_users, config.n_channels) if self.p is None else self.p
        self._shape = (num_envs, config.n_users)
        self._n_channels = config.n_channels
        self._value = np.full(self._shape + (config.n_channels,), np.log2(1.0 + config.snr_high))
        self._rng = rng

    def act(self, obs, throughput, env) -> np.ndarray:
        last = obs[..., 0]
        tried = last > 0
        index = np.maximum(last - 1, 0)[..., None]  # the last channel, [B, N, 1]
        old = np.take_along_axis(self._value, index, axis=-1)[..., 0]
        new = np.where(tried, old + self.step_size * (throughput - old), old)
        np.put_along_axis(self._value, index, new[..., None], axis=-1)

        rng = self._rng
        # random noise below any real difference in value breaks ties uniformly
        best = np.argmax(self._value + 1e-9 * rng.random(self._value.shape), axis=-1) + 1
        random_channel = rng.integers(1, self._n_channels + 1, size=self._shape)
        channel = np.where(rng.random(self._shape) < self.explore, random_channel, best)
        return np.where(rng.random(self._shape) < self._p, channel, 0)
