"""Randomised slotted Aloha."""

from __future__ import annotations

import numpy as np

from hapruned.baselines.base import Policy, check_probability
from hapruned.env import DSAConfig


def optimal_aloha_p(n_users: int, n_channels: int) -> float:
    """Transmit probability that maximises the expected number of ACKs when N users pick channels uniformly.

    Per channel each user attempts with ``q = p / K``; ``N q (1 - q)^(N-1)`` peaks at ``q = 1/N``,
    so ``p = min(1, K / N)`` (0.5 in the paper config N=10, K=5).
    """
    return min(1.0, n_channels / n_users)


class SlottedAloha(Policy):
    """Each user transmits with probability ``p`` on a uniformly random channel, independently every slot.

    ``p=None`` uses :func:`optimal_aloha_p` for the config given to ``reset``.
    """

    def __init__(self, p: float | None = None):
        self.p = None if p is None else check_probability("aloha p", p, low_open=True)

    def reset(self, num_envs, config: DSAConfig, rng: np.random.Generator) -> None:
        self._p = optimal_aloha_p(config.n_users, config.n_channels) if self.p is None else self.p
        self._shape = (num_envs, config.n_users)
        self._n_channels = config.n_channels
        self._rng = rng

    def act(self, obs, throughput, env) -> np.ndarray:
        channel = self._rng.integers(1, self._n_channels + 1, size=self._shape)
        transmit = self._rng.random(self._shape) < self._p
        return np.where(transmit, channel, 0)
