"""The opportunistic channel-aware (OCA) policy: Aloha timing, channels chosen by learned value."""

from __future__ import annotations

import numpy as np

from hapruned.baselines.aloha import optimal_aloha_p
from hapruned.baselines.base import Policy, check_probability
from hapruned.env import DSAConfig
from hapruned.env.encoding import ACK


class OpportunisticChannelAware(Policy):
    """Each user learns the value of each channel from its own feedback and transmits on the best one.

    The exact rule, per user n (no information is shared between users):

    - ``value[n, k]`` estimates the throughput user n gets per attempt on channel k, i.e. success
      rate × ``log2(1 + SNR[n, k])``. It starts optimistic at ``log2(1 + snr_high)``, so every
      channel gets tried. After each attempt on channel k it moves towards what the attempt gave
      (``log2(1 + SNR)`` on an ACK, 0 on a NACK or a primary user):
      ``value[n, k] += step_size * (throughput - value[n, k])``, an exponential average that
      follows the other users as they move.
    - With the environment's ``observe_snr`` the user also sees the rate ``log2(1 + SNR[n, k])`` of
      each attempt not blocked by a primary user, collided or not, so it knows a channel's rate after
      one such attempt (``log2(1 + snr_high)`` until then) and learns only the success rate, with the
      same exponential average towards 1 on an ACK and 0 otherwise (starting at 1):
      ``value[n, k] = success[n, k] × rate[n, k]``.
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
        best_rate = np.log2(1.0 + config.snr_high)
        channels = self._shape + (config.n_channels,)
        # what the exponential average follows: the throughput per attempt, or the success rate when
        # the rate itself is observed (then known_rate, optimistic until a channel's first observation)
        self._average = np.full(channels, 1.0 if config.observe_snr else best_rate)
        self._known_rate = np.full(channels, best_rate) if config.observe_snr else None
        self._rng = rng

    def act(self, obs, throughput, env) -> np.ndarray:
        last = obs[..., 0]
        tried = last > 0
        index = np.maximum(last - 1, 0)[..., None]  # the last channel, [B, N, 1]
        if self._known_rate is None:
            target = throughput
        else:
            target = np.where(obs[..., 1] == ACK, 1.0, 0.0)
            rate = env.observed_rate  # each user reads its own entry only
            known = np.take_along_axis(self._known_rate, index, axis=-1)[..., 0]
            np.put_along_axis(self._known_rate, index, np.where(rate > 0, rate, known)[..., None], axis=-1)
        old = np.take_along_axis(self._average, index, axis=-1)[..., 0]
        new = np.where(tried, old + self.step_size * (target - old), old)
        np.put_along_axis(self._average, index, new[..., None], axis=-1)
        value = self._average if self._known_rate is None else self._average * self._known_rate

        rng = self._rng
        # random noise below any real difference in value breaks ties uniformly
        best = np.argmax(value + 1e-9 * rng.random(value.shape), axis=-1) + 1
        random_channel = rng.integers(1, self._n_channels + 1, size=self._shape)
        channel = np.where(rng.random(self._shape) < self.explore, random_channel, best)
        return np.where(rng.random(self._shape) < self._p, channel, 0)
