"""What every learning algorithm shares: the environments, the rollout and the evaluation.

A learner trains the policies of S seeds side by side. Its environments hold ``envs_per_iteration``
episodes per seed, seed-major, each seed with its own random streams; the policies act on grouped
inputs ``(G, batch, F)`` with G = S x N groups (seed-major, one per agent of each seed), whatever the
algorithm stores underneath (N actors per seed, or one network shared by a seed's agents).
Subclasses implement ``_act`` (one step of the policies), ``train_iteration`` and their state.
"""

from __future__ import annotations

import numpy as np
import torch

from hapruned.algos.config import TrainConfig
from hapruned.env import BatchedDSAEnv, encode_env_observations, observation_size
from hapruned.env.rng import seed_states
from hapruned.validation import check_integer


def mix_seeds(seeds, stream: int) -> int:
    """A 63-bit seed for one purpose (``stream``) derived from the training seeds."""
    return int(np.random.SeedSequence([*seeds, stream]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class ReturnNormalizer:
    """Running variance of the discounted return per seed; rewards are divided by its square root."""

    def __init__(self, seeds: int, gamma: float):
        self.gamma = gamma
        self.count = torch.zeros(seeds, dtype=torch.float64)
        self.mean = torch.zeros(seeds, dtype=torch.float64)
        self.var = torch.ones(seeds, dtype=torch.float64)

    def update(self, rewards: torch.Tensor) -> None:
        """Add the discounted returns of ``rewards`` (time, seeds, envs) to the statistics."""
        returns = torch.empty_like(rewards, dtype=torch.float64)
        running = torch.zeros_like(returns[0])
        for t in range(rewards.shape[0]):
            running = running * self.gamma + rewards[t]
            returns[t] = running
        batch = returns.transpose(0, 1).reshape(returns.shape[1], -1)
        n, mean, var = batch.shape[1], batch.mean(1), batch.var(1, unbiased=False)
        total = self.count + n
        delta = mean - self.mean
        m2 = self.var * self.count + var * n + delta**2 * self.count * n / total
        self.mean, self.var, self.count = self.mean + delta * n / total, m2 / total, total

    def scale(self, rewards: torch.Tensor) -> torch.Tensor:
        """rewards (time, seeds, envs) divided by each seed's current return std."""
        scale = torch.rsqrt(self.var + 1e-8).to(rewards.dtype)
        return rewards * scale[None, :, None]

    def __call__(self, rewards: torch.Tensor) -> torch.Tensor:
        """Update the statistics with ``rewards`` (time, seeds, envs), then scale them."""
        self.update(rewards)
        return self.scale(rewards)

    def state_dict(self) -> dict:
        return {"count": self.count.clone(), "mean": self.mean.clone(), "var": self.var.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.var = (state[k].clone() for k in ("count", "mean", "var"))


def clip_grad_norm_per_group(params, max_norm: float) -> torch.Tensor:
    """Scale each group's gradient (leading axis of every param) to norm <= max_norm; returns the norms [G]."""
    sq = sum(p.grad.pow(2).flatten(1).sum(1) for p in params)
    norms = sq.sqrt()
    if max_norm > 0:
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for p in params:
            p.grad.mul_(scale.view(-1, *([1] * (p.ndim - 1))))
    return norms


class Learner:
    """Shapes: S training seeds, N agents, G = S*N agent groups, B = envs_per_iteration, T = horizon,
    K channels, F = K + 5 input features (K + 6 with ``observe_snr``), A = K + 1 actions."""

    def __init__(self, config: TrainConfig):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config = cfg = config
        self.device = torch.device(cfg.device)
        self.env_config = cfg.env_config
        self.seeds = cfg.seed_list
        S, N, K = len(self.seeds), cfg.n_users, cfg.n_channels
        self.S, self.N, self.K, self.G = S, N, K, S * N
        self.F = observation_size(K, self.env_config.observe_snr)
        # Action sampling draws on the device where the networks live.
        self.generator = torch.Generator(device=self.device).manual_seed(mix_seeds(self.seeds, 1))
        self.reward_normalizer = ReturnNormalizer(S, cfg.gamma)
        # One env batch holding B episodes per seed, seed-major; each seed's streams depend only on it.
        B = cfg.envs_per_iteration
        self.env = BatchedDSAEnv(self.env_config, S * B, copy=False)
        self.env.rng_states = np.concatenate([seed_states(mix_seeds((seed,), 3), B) for seed in self.seeds])

    # ------------------------------------------------------------------ the policies' interface
    def _act(self, x: torch.Tensor, state, generator: torch.Generator, training: bool, greedy: bool):
        """One step of every agent's policy: x (G, batch, F) -> (actions (G, batch) int64, log-probs of
        the actions (G, batch) or None, the next recurrent state). ``training``: the rollout of an
        iteration (exploring as the algorithm does); else an evaluation, with the most likely action
        when ``greedy``."""
        raise NotImplementedError

    def train_iteration(self, iteration: int) -> dict:
        raise NotImplementedError

    # ------------------------------------------------------------------ rollout
    def _encode(self, obs: np.ndarray, observed_rate: np.ndarray, buffer: np.ndarray, batch: int) -> torch.Tensor:
        """obs int64 (S*batch, N, 2) and the env's observed rates (S*batch, N), seed-major -> grouped input
        (G, batch, F)."""
        encode_env_observations(self.env_config, obs, observed_rate, out=buffer)
        x = torch.from_numpy(buffer).view(self.S, batch, self.N, self.F).transpose(1, 2)
        return x.reshape(self.G, batch, self.F).to(self.device)

    def _to_env_actions(self, actions: torch.Tensor, batch: int) -> np.ndarray:
        """(G, batch) -> int64 (S*batch, N) for the environment."""
        return actions.view(self.S, self.N, batch).transpose(1, 2).reshape(self.S * batch, self.N).cpu().numpy()

    @torch.inference_mode()
    def _play(self, env: BatchedDSAEnv, batch: int, generator: torch.Generator, training: bool = True,
              greedy: bool = False, record: bool = True):
        """Play one episode in every environment of ``env`` (S*batch of them).

        Returns inputs (T, G, batch, F), actions (T, G, batch), log-probs (T, G, batch) (each None
        unless ``record``; log-probs None for value-based learners) and raw rewards (T, S, batch).
        """
        T = self.env_config.horizon
        obs = env.reset()
        buffer = np.zeros((self.S * batch, self.N, self.F), dtype=np.float32)
        rewards = torch.empty(T, self.S * batch, dtype=torch.float64)
        inputs = torch.empty(T, self.G, batch, self.F, device=self.device) if record else None
        actions = torch.empty(T, self.G, batch, dtype=torch.int64, device=self.device) if record else None
        log_probs = []
        state = None
        for t in range(T):
            x = self._encode(obs, env.observed_rate, buffer, batch)
            action, log_prob, state = self._act(x, state, generator, training, greedy)
            if record:
                inputs[t], actions[t] = x, action
                log_probs.append(log_prob)
            obs, reward, _, _ = env.step(self._to_env_actions(action, batch))
            rewards[t] = torch.from_numpy(reward)
        log_probs = torch.stack(log_probs) if record and log_probs[0] is not None else None
        return inputs, actions, log_probs, rewards.view(T, self.S, batch)

    def evaluate(self, episodes: int, seed: int, greedy: bool | None = None) -> list[float]:
        """Mean raw episode reward of each training seed's policies over ``episodes`` held-out episodes.

        Every seed plays the same episodes (environment streams from ``seed``); random actions come
        from a generator seeded with ``seed`` (greedy: the most likely ones; default: the config's
        ``eval_greedy``), so the training random state is untouched.
        """
        greedy = self.config.eval_greedy if greedy is None else greedy
        episodes = check_integer(episodes, "episodes", 1)
        env = BatchedDSAEnv(self.env_config, self.S * episodes, copy=False)
        env.rng_states = np.tile(seed_states(seed, episodes), self.S)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        *_, rewards = self._play(env, episodes, generator, training=False, greedy=greedy, record=False)
        return rewards.sum(0).mean(1).tolist()

    # ------------------------------------------------------------------ state shared by every learner
    def _common_state(self) -> dict:
        return {
            "reward_normalizer": self.reward_normalizer.state_dict(),
            "generator": self.generator.get_state(),
            "env_states": torch.from_numpy(self.env.rng_states),  # a tensor: checkpoints hold no NumPy objects
        }

    def _load_common_state(self, state: dict) -> None:
        self.reward_normalizer.load_state_dict(state["reward_normalizer"])
        self.generator.set_state(state["generator"])
        states = state["env_states"]  # a uint64 tensor, or the NumPy array of checkpoints written before
        self.env.rng_states = states.numpy().copy() if isinstance(states, torch.Tensor) else np.array(states, dtype=np.uint64)
