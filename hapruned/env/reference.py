"""A plain NumPy DSA environment, one environment at a time: the readable statement of the rules.

It exists to check :class:`~hapruned.env.batched.BatchedDSAEnv` (tests drive both with the same
random draws) and to serve as the baseline of the environment benchmark. Rules (docs/design.md §1):

- Each of the N users picks an action ``a`` in ``0..K``: ``0`` stays idle, ``k`` transmits on channel k.
- In every slot each channel k is independently occupied by a primary user with probability
  ``pu_prob[k]``.
- Feedback per user: ``0`` when idle; ``-2`` when its channel is occupied by a primary user
  (whatever the other users did); otherwise ``1`` (ACK) when it is the only user on that channel
  and ``-1`` (NACK) when two or more users chose it.
- ``snr[n, k] ~ U[snr_low, snr_high]`` (linear) is drawn at each episode start and fixed for the
  episode. A user's throughput is ``log2(1 + snr[n, a - 1])`` on an ACK and 0 otherwise; the shared
  reward is the sum of the users' throughputs.
- An episode lasts ``horizon`` slots; the observation of a user is its last action and feedback,
  ``(0, 0)`` at the start.
- ``difference_reward[n]`` is the team reward minus the team reward had user n stayed idle (all
  else equal): its own throughput on an ACK, minus the rate the one other user on its channel would
  have earned alone when the two collided on a channel free of primary users, else 0.
- ``observed_rate[n]`` is ``log2(1 + snr[n, a - 1])`` when user n transmitted on a channel free of
  primary users, whether or not it collided, and 0 when it was idle or blocked (and at the start):
  the SNR a user observes with ``config.observe_snr``.

The random draws can be passed in (``reset(snr=...)``, ``step(actions, pu_busy=...)``) or, when
left out, are drawn from the environment's own ``numpy.random.Generator``.
"""

from __future__ import annotations

import numpy as np

from hapruned.env.config import DSAConfig
from hapruned.env.encoding import ACK, IDLE, NACK, PRIMARY_USER



class ReferenceDSAEnv:
    """One DSA environment in plain NumPy.

    ``reset(snr=None) -> obs int64[N, 2]``; ``step(actions int[N], pu_busy=None) ->
    (obs int64[N, 2], reward float, throughput float64[N], done bool)``. ``pu_busy[K]`` is the
    primary-user state of the slot being played. ``observed_rate`` float64[N]: see the rules above.
    """

    def __init__(self, config: DSAConfig, seed: int | None = None):
        if not isinstance(config, DSAConfig):
            raise TypeError(f"config must be a DSAConfig, got {type(config).__name__}")
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.pu_probs = config.pu_probs
        self.snr = self.rate = self.observed_rate = self.difference_reward = None
        self.t = None  # slots played in the current episode; None before the first reset

    def reset(self, snr: np.ndarray | None = None) -> np.ndarray:
        """Start an episode with the SNR matrix ``snr[N, K]`` (drawn uniformly when omitted)."""
        cfg = self.config
        shape = (cfg.n_users, cfg.n_channels)
        if snr is None:
            snr = self.rng.uniform(cfg.snr_low, cfg.snr_high, size=shape)
        snr = np.array(snr, dtype=np.float64)
        if snr.shape != shape:
            raise ValueError(f"snr must have shape (n_users, n_channels) = {shape}, got {snr.shape}")
        self.snr = snr
        self.rate = np.log2(1.0 + snr)  # what an ACK on channel k earns user n, fixed for the episode
        self.observed_rate = np.zeros(cfg.n_users)
        self.difference_reward = np.zeros(cfg.n_users)
        self.t = 0
        return np.zeros((cfg.n_users, 2), dtype=np.int64)

    def step(self, actions, pu_busy: np.ndarray | None = None):
        """Play one slot; ``pu_busy[K]`` says which channels a primary user occupies (drawn when omitted)."""
        cfg = self.config
        if self.t is None:
            raise RuntimeError("call reset() before step()")
        if self.t >= cfg.horizon:
            raise RuntimeError(f"the episode is over after horizon={cfg.horizon} steps; call reset()")
        actions = np.asarray(actions)
        if actions.shape != (cfg.n_users,):
            raise ValueError(f"actions must have shape (n_users,) = ({cfg.n_users},), got {actions.shape}")
        if not np.issubdtype(actions.dtype, np.integer):
            raise TypeError(f"actions must be integers in 0..{cfg.n_channels}, got dtype {actions.dtype}")
        if np.any((actions < 0) | (actions > cfg.n_channels)):
            raise ValueError(f"actions must lie in 0..{cfg.n_channels}, got {actions.tolist()}")
        if pu_busy is None:
            pu_busy = self.rng.random(cfg.n_channels) < self.pu_probs
        pu_busy = np.asarray(pu_busy, dtype=bool)
        if pu_busy.shape != (cfg.n_channels,):
            raise ValueError(f"pu_busy must have shape ({cfg.n_channels},), got {pu_busy.shape}")

        transmitting = actions > 0
        channel = np.where(transmitting, actions - 1, 0)  # the channel index, 0 for idle users (masked below)
        users_on_action = np.bincount(actions, minlength=cfg.n_channels + 1)
        alone = users_on_action[actions] == 1
        occupied = pu_busy[channel]

        feedback = np.full(cfg.n_users, NACK, dtype=np.int64)
        feedback[alone] = ACK
        feedback[occupied] = PRIMARY_USER  # a primary user overrides whatever the other users did
        feedback[~transmitting] = IDLE

        rate = self.rate[np.arange(cfg.n_users), channel]
        throughput = np.where(feedback == ACK, rate, 0.0)
        self.observed_rate = np.where(transmitting & ~occupied, rate, 0.0)
        reward = float(throughput.sum())
        # a collision of exactly two users on a free channel: without user n the other would have had an ACK
        rate_on_action = np.bincount(actions, weights=np.where(transmitting, rate, 0.0), minlength=cfg.n_channels + 1)
        pair = (feedback == NACK) & (users_on_action[actions] == 2)
        self.difference_reward = throughput - np.where(pair, rate_on_action[actions] - rate, 0.0)

        self.t += 1
        obs = np.stack([actions.astype(np.int64), feedback], axis=-1)
        return obs, reward, throughput, self.t == cfg.horizon
