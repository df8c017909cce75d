"""A PettingZoo ``ParallelEnv`` over one DSA environment (needs ``pip install hapruned[pettingzoo]``).

Agents are ``"user_0" .. "user_{N-1}"``. Each observes its encoded last action and feedback
(``Box(0, 1, (K + 5,), float32)``, see :func:`~hapruned.env.encoding.encode_observations`), with
``observe_snr`` also the scaled SNR of its last transmission (``(K + 6,)``), and picks an action in
``Discrete(K + 1)`` (0 = idle, k = channel k). Every agent receives the shared reward;
its own throughput is in ``infos[agent]["throughput"]``. Episodes never terminate early: at the
horizon every agent is truncated and ``agents`` becomes empty until the next ``reset``.
"""

from __future__ import annotations

import numpy as np

from hapruned.env.batched import BatchedDSAEnv
from hapruned.env.config import DSAConfig
from hapruned.env.encoding import encode_env_observations, observation_size

try:
    from gymnasium import spaces
    from pettingzoo import ParallelEnv
except ImportError as error:  # optional dependency
    raise ImportError(
        f"hapruned.env.pettingzoo needs pettingzoo ({error}); install it with `pip install hapruned[pettingzoo]`"
    ) from error


class DSAParallelEnv(ParallelEnv):
    """One DSA environment as a PettingZoo ``ParallelEnv``.

    ``seed`` seeds the environment's random stream (a fresh random seed when ``None``);
    ``reset(seed=s)`` restarts it, ``reset()`` continues it. ``options`` of ``reset`` are accepted
    and ignored. No rendering: ``render_mode`` must be ``None``.
    """

    metadata = {"name": "hapruned_dsa_v0", "render_modes": []}

    def __init__(self, config: DSAConfig | None = None, seed: int | None = None, render_mode: str | None = None):
        if render_mode is not None:
            raise ValueError(f"render_mode must be None (the DSA environment does not render), got {render_mode!r}")
        self.render_mode = None
        self.config = DSAConfig() if config is None else config
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1, dtype=np.uint64)[0])
        self._env = BatchedDSAEnv(self.config, 1, seed=seed)
        n_channels = self.config.n_channels
        self.possible_agents = [f"user_{n}" for n in range(self.config.n_users)]
        self.agents = []
        size = observation_size(n_channels, self.config.observe_snr)
        self.observation_spaces = {agent: spaces.Box(0.0, 1.0, (size,), np.float32) for agent in self.possible_agents}
        self.action_spaces = {agent: spaces.Discrete(n_channels + 1) for agent in self.possible_agents}

    def observation_space(self, agent):
        return self.observation_spaces[agent]

    def action_space(self, agent):
        return self.action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None):
        obs = self._env.reset(seed=seed)
        self.agents = list(self.possible_agents)
        return self._observations(obs), {agent: {} for agent in self.agents}

    def step(self, actions: dict):
        if not self.agents:
            raise RuntimeError("the episode is over (no agents left); call reset()")
        missing, unknown = set(self.agents) - set(actions), set(actions) - set(self.agents)
        if missing or unknown:
            raise ValueError(
                f"actions must hold one action for every agent {self.agents}; "
                f"missing {sorted(missing)}, unknown {sorted(unknown, key=str)}"
            )
        joint = np.array([[actions[agent] for agent in self.agents]])
        obs, reward, throughput, done = self._env.step(joint)
        agents = self.agents
        rewards = {agent: float(reward[0]) for agent in agents}
        terminations = {agent: False for agent in agents}
        truncations = {agent: bool(done[0]) for agent in agents}
        infos = {agent: {"throughput": float(throughput[0, n])} for n, agent in enumerate(agents)}
        observations = self._observations(obs)
        if done[0]:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        """The joint observation ``float32[N, F]`` (what a centralised critic would read), F = K + 5 or K + 6."""
        return self._encode(self._env._obs[0])

    def render(self):
        return None

    def close(self):
        pass

    def _encode(self, obs: np.ndarray) -> np.ndarray:
        """The encoded observations of environment 0, obs (N, 2) -> (N, F)."""
        return encode_env_observations(self.config, obs, self._env.observed_rate[0])

    def _observations(self, obs: np.ndarray) -> dict:
        encoded = self._encode(obs[0])
        return {agent: encoded[n] for n, agent in enumerate(self.possible_agents)}
