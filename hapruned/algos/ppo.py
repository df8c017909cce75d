"""IAGC-PPO: independent LSTM actors, one global LSTM critic, clipped PPO, gradual actor pruning
(paper Section III; decisions in DESIGN.md §2).

One iteration = sample ``envs_per_iteration`` synchronous episodes of every training seed ->
``epochs`` of PPO over them -> a prune step. Several seeds train side by side: their actors are
extra groups of the same grouped tensors (groups = seeds x agents, seed-major), each seed has its
own critic group, its own environments and its own reward statistics, and every loss is a sum of
per-group means with per-group gradient clipping, so the seeds do not influence each other.

Decisions the paper leaves open:

- Rewards are divided by a running standard deviation of the discounted return (per seed), as
  gymnasium's ``NormalizeReward``; the episode reward reported is the raw ``sum_t r_t``.
- The critic's value of agent n uses agent n's own input sequence (``critic_input="own"``) or all
  agents' inputs concatenated (``"joint"``, one value per environment). Episodes end at the horizon,
  so the value after the last slot is zero. Advantages come from GAE per agent (shared reward).
- The update runs the whole episode through the LSTMs from zero states (full BPTT); minibatches are
  sets of environments, so sequences stay whole. Advantages are standardised per agent and minibatch.
- A NaN or infinite loss or gradient raises ``FloatingPointError``; the networks and optimisers are
  restored to their state before the update first.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from hapruned.algos.config import TrainConfig
from hapruned.algos.models import GroupedActor, GroupedCritic, init_group_
from hapruned.env import BatchedDSAEnv, encode_observations, observation_size
from hapruned.env.rng import seed_states
from hapruned.pruning import Pruner, make_schedule


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimates of episodes that all end after the last step.

    rewards, values: (time, ...). Returns (advantages, returns), each (time, ...), with
    ``returns = advantages + values`` and a zero value after the last step.
    """
    advantages = torch.empty_like(values)
    next_value = torch.zeros_like(values[0])
    running = torch.zeros_like(values[0])
    for t in range(values.shape[0] - 1, -1, -1):
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
        next_value = values[t]
    return advantages, advantages + values


class ReturnNormalizer:
    """Running variance of the discounted return per seed; rewards are divided by its square root."""

    def __init__(self, seeds: int, gamma: float):
        self.gamma = gamma
        self.count = torch.zeros(seeds, dtype=torch.float64)
        self.mean = torch.zeros(seeds, dtype=torch.float64)
        self.var = torch.ones(seeds, dtype=torch.float64)

    def __call__(self, rewards: torch.Tensor) -> torch.Tensor:
        """rewards (time, seeds, envs) -> scaled rewards of the same shape (statistics updated first)."""
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
        scale = torch.rsqrt(self.var + 1e-8).to(rewards.dtype)
        return rewards * scale[None, :, None]

    def state_dict(self) -> dict:
        return {"count": self.count.clone(), "mean": self.mean.clone(), "var": self.var.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.var = (state[k].clone() for k in ("count", "mean", "var"))


def _clip_grad_norm_per_group(params, max_norm: float) -> torch.Tensor:
    """Scale each group's gradient (leading axis of every param) to norm <= max_norm; returns the norms [G]."""
    sq = sum(p.grad.pow(2).flatten(1).sum(1) for p in params)
    norms = sq.sqrt()
    if max_norm > 0:
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for p in params:
            p.grad.mul_(scale.view(-1, *([1] * (p.ndim - 1))))
    return norms


class IAGCPPO:
    """The learner: grouped actors and critics, their optimisers, the pruner and the environments.

    Shapes: S training seeds, N agents, G = S*N actor groups, B = envs_per_iteration, T = horizon,
    K channels, F = K + 5 input features.
    """

    def __init__(self, config: TrainConfig):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config = cfg = config
        self.device = torch.device(cfg.device)
        self.env_config = cfg.env_config
        self.seeds = cfg.seed_list
        S, N, K = len(self.seeds), cfg.n_users, cfg.n_channels
        self.S, self.N, self.K, self.G = S, N, K, S * N
        self.F = observation_size(K)

        self.actor = GroupedActor(self.G, self.F, cfg.hidden_size, cfg.num_layers, K + 1, device=self.device)
        critic_in = self.F if cfg.critic_input == "own" else N * self.F
        self.critic = GroupedCritic(S, critic_in, cfg.hidden_size, cfg.num_layers, device=self.device)
        for s, seed in enumerate(self.seeds):
            init = torch.Generator().manual_seed(seed)
            for module in (self.actor.lstm, self.actor.head):
                for n in range(N):
                    init_group_(module, s * N + n, init)
            for module in (self.critic.lstm, self.critic.head):
                init_group_(module, s, init)
        # fused: one pass over each tensor per step, instead of a pass per Adam operation
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr, fused=True)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, fused=True)

        self.pruner = None
        if cfg.method != "dense":
            schedule = make_schedule(
                cfg.method, list(cfg.agent_targets) * S, groups=self.G, i_end=cfg.i_end or cfg.iterations,
                i_start=cfg.i_start, p0=cfg.p0, amplitude=cfg.amplitude, period=cfg.schedule_period,
            )
            self.pruner = Pruner(
                self.actor, self.actor.prunable_names, schedule, mode=cfg.prune_mode, i_prune=cfg.i_prune,
                i_start=cfg.i_start, total_iterations=cfg.iterations, optimizer=self.actor_optimizer,
                per_matrix=cfg.per_matrix,
            )
        self.reward_normalizer = ReturnNormalizer(S, cfg.gamma)
        # Sampling and minibatch order; the device generator draws actions where the networks live.
        self.generator = torch.Generator(device=self.device).manual_seed(_mix_seeds(self.seeds, 1))
        self.shuffle_generator = torch.Generator().manual_seed(_mix_seeds(self.seeds, 2))
        # One env batch holding B episodes per seed, seed-major; each seed's streams depend only on it.
        B = cfg.envs_per_iteration
        self.env = BatchedDSAEnv(self.env_config, S * B, copy=False)
        self.env.rng_states = np.concatenate([seed_states(_mix_seeds((seed,), 3), B) for seed in self.seeds])

    # ------------------------------------------------------------------ rollout
    def _encode(self, obs: np.ndarray, buffer: np.ndarray, batch: int) -> torch.Tensor:
        """obs int64 (S*batch, N, 2), seed-major -> actor input (G, batch, F)."""
        encode_observations(obs, self.K, out=buffer)
        x = torch.from_numpy(buffer).view(self.S, batch, self.N, self.F).transpose(1, 2)
        return x.reshape(self.G, batch, self.F).to(self.device)

    def _to_env_actions(self, actions: torch.Tensor, batch: int) -> np.ndarray:
        """(G, batch) -> int64 (S*batch, N) for the environment."""
        return actions.view(self.S, self.N, batch).transpose(1, 2).reshape(self.S * batch, self.N).cpu().numpy()

    @torch.inference_mode()
    def _play(self, env: BatchedDSAEnv, batch: int, generator: torch.Generator, greedy: bool = False, record: bool = True):
        """Play one episode in every environment of ``env`` (S*batch of them).

        Returns inputs (T, G, batch, F), actions (T, G, batch), log-probs (T, G, batch) (None
        unless ``record``) and raw rewards (T, S, batch).
        """
        T = self.env_config.horizon
        obs = env.reset()
        buffer = np.zeros((self.S * batch, self.N, self.F), dtype=np.float32)
        rewards = torch.empty(T, self.S * batch, dtype=torch.float64)
        inputs = torch.empty(T, self.G, batch, self.F, device=self.device) if record else None
        actions = torch.empty(T, self.G, batch, dtype=torch.int64, device=self.device) if record else None
        log_probs = torch.empty(T, self.G, batch, device=self.device) if record else None
        state = None
        for t in range(T):
            x = self._encode(obs, buffer, batch)
            logits, state = self.actor(x.unsqueeze(0), state)
            logits = logits[0]
            if greedy:
                action = logits.argmax(-1)
            else:
                u = torch.rand(logits.shape[:-1] + (1,), generator=generator, device=self.device)
                action = (torch.softmax(logits, -1).cumsum(-1) < u).sum(-1).clamp_(max=self.K)
            if record:
                inputs[t], actions[t] = x, action
                log_probs[t] = torch.log_softmax(logits, -1).gather(-1, action.unsqueeze(-1)).squeeze(-1)
            obs, reward, _, _ = env.step(self._to_env_actions(action, batch))
            rewards[t] = torch.from_numpy(reward)
        return inputs, actions, log_probs, rewards.view(T, self.S, batch)

    def _values(self, inputs: torch.Tensor) -> torch.Tensor:
        """Critic values of every agent: inputs (T, G, b, F) -> (T, G, b), one sequence forward."""
        T, _, b, F = inputs.shape
        x = inputs.view(T, self.S, self.N, b, F)
        if self.config.critic_input == "own":
            return self.critic(x.reshape(T, self.S, self.N * b, F)).view(T, self.G, b)
        joint = x.permute(0, 1, 3, 2, 4).reshape(T, self.S, b, self.N * F)
        return self.critic(joint).unsqueeze(2).expand(T, self.S, self.N, b).reshape(T, self.G, b)

    # ------------------------------------------------------------------ update
    def _snapshot(self) -> dict:
        return copy.deepcopy({
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(), "critic_optimizer": self.critic_optimizer.state_dict(),
        })

    def _restore(self, snapshot: dict) -> None:
        self.actor.load_state_dict(snapshot["actor"])
        self.critic.load_state_dict(snapshot["critic"])
        self.actor_optimizer.load_state_dict(snapshot["actor_optimizer"])
        self.critic_optimizer.load_state_dict(snapshot["critic_optimizer"])

    def train_iteration(self, iteration: int) -> dict:
        """Rollout -> PPO update -> prune step for ``iteration`` (1..iterations); returns metrics.

        ``episode_reward``: mean raw episode reward over all seeds' episodes (``episode_reward_per_seed``
        per seed); PPO diagnostics averaged over the update's minibatches; ``sparsity``: per agent
        (mean over seeds; ``sparsity_per_seed`` [S][N]), ``target_sparsity`` the schedule's per agent;
        ``agent_steps`` = N * S * B * T.
        """
        cfg = self.config
        S, G, N, B, T = self.S, self.G, self.N, cfg.envs_per_iteration, self.env_config.horizon
        inputs, actions, old_log_probs, raw_rewards = self._play(self.env, B, self.generator)
        with torch.inference_mode():
            values = self._values(inputs)
        rewards = self.reward_normalizer(raw_rewards) if cfg.normalize_rewards else raw_rewards
        rewards = rewards.to(values.dtype).to(self.device).unsqueeze(2).expand(T, S, N, B).reshape(T, G, B)
        advantages, returns = compute_gae(rewards, values, cfg.gamma, cfg.gae_lambda)
        # inference-mode tensors cannot be saved for backward; the update needs ordinary ones
        inputs, actions, old_log_probs = inputs.clone(), actions.clone(), old_log_probs.clone()
        advantages, returns = advantages.clone(), returns.clone()

        snapshot = self._snapshot()
        stats = {k: [] for k in ("actor_loss", "critic_loss", "entropy", "approx_kl", "clip_fraction", "actor_grad_norm", "critic_grad_norm")}
        size = B // cfg.minibatches
        for _ in range(cfg.epochs):
            order = torch.randperm(B, generator=self.shuffle_generator).to(self.device)
            for start in range(0, B, size):
                idx = order[start:start + size]
                try:
                    self._minibatch_step(inputs[:, :, idx], actions[:, :, idx], old_log_probs[:, :, idx],
                                         advantages[:, :, idx], returns[:, :, idx], stats)
                except FloatingPointError:
                    self._restore(snapshot)
                    raise
        pruned = self.pruner.step(iteration) if self.pruner is not None else False

        residual = (returns - values).flatten()
        explained = 1.0 - residual.var() / returns.flatten().var().clamp_min(1e-12)
        episode = raw_rewards.sum(0)  # (S, B)
        sparsity = self.actor.sparsity().view(S, N)
        metrics = {k: float(np.mean(v)) for k, v in stats.items()}
        metrics.update({
            "episode_reward": float(episode.mean()),
            "episode_reward_per_seed": episode.mean(1).tolist(),
            "explained_variance": float(explained),
            "sparsity": sparsity.mean(0).tolist(),
            "sparsity_per_seed": sparsity.tolist(),
            # the schedule's value now; in regrow mode the weights regrow between events, so the
            # measured sparsity is the target only at an event
            "target_sparsity": (self.pruner.schedule.get_last_sparsity().view(S, N).mean(0).tolist()
                                if self.pruner is not None else [0.0] * N),
            "pruned": bool(pruned),
            "agent_steps": N * S * B * T,
        })
        return metrics

    def _minibatch_step(self, inputs, actions, old_log_probs, advantages, returns, stats) -> None:
        """One clipped-PPO step of actors and critic on a set of whole episodes (all tensors (T, G, b, ...))."""
        cfg = self.config
        logits, _ = self.actor(inputs)
        log_all = torch.log_softmax(logits, -1)
        log_probs = log_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        entropy = -(log_all.exp() * log_all).sum(-1)
        if cfg.normalize_advantages:
            mean, std = advantages.mean((0, 2), keepdim=True), advantages.std((0, 2), keepdim=True)
            advantages = (advantages - mean) / (std + 1e-8)
        log_ratio = log_probs - old_log_probs
        ratio = log_ratio.exp()
        surrogate = torch.min(ratio * advantages, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * advantages)
        # a sum over groups of per-group means: each agent's gradient is independent of the others
        per_group = -surrogate.mean((0, 2)) - cfg.entropy_coef * entropy.mean((0, 2))
        actor_loss = per_group.sum()
        values = self._values(inputs)
        critic_loss = 0.5 * (values - returns).pow(2).view(values.shape[0], self.S, -1).mean((0, 2)).sum()
        if not (torch.isfinite(actor_loss) and torch.isfinite(critic_loss)):
            raise FloatingPointError(
                f"non-finite loss (actor {actor_loss.item()}, critic {critic_loss.item()}); parameters restored"
            )
        self.actor_optimizer.zero_grad(set_to_none=False)
        self.critic_optimizer.zero_grad(set_to_none=False)
        (actor_loss + critic_loss).backward()
        actor_norms = _clip_grad_norm_per_group(list(self.actor.parameters()), cfg.max_grad_norm)
        critic_norms = _clip_grad_norm_per_group(list(self.critic.parameters()), cfg.max_grad_norm)
        if not (torch.isfinite(actor_norms).all() and torch.isfinite(critic_norms).all()):
            raise FloatingPointError("non-finite gradient; parameters restored")
        self.actor_optimizer.step()
        self.critic_optimizer.step()
        with torch.no_grad():
            stats["actor_loss"].append(float(per_group.mean()))
            stats["critic_loss"].append(float(critic_loss) / self.S)
            stats["entropy"].append(float(entropy.mean()))
            stats["approx_kl"].append(float(((ratio - 1) - log_ratio).mean()))
            stats["clip_fraction"].append(float(((ratio - 1).abs() > cfg.clip).float().mean()))
            stats["actor_grad_norm"].append(float(actor_norms.mean()))
            stats["critic_grad_norm"].append(float(critic_norms.mean()))

    # ------------------------------------------------------------------ evaluation and state
    def evaluate(self, episodes: int, seed: int, greedy: bool | None = None) -> list[float]:
        """Mean raw episode reward of each training seed's actors over ``episodes`` held-out episodes.

        Every seed plays the same episodes (environment streams from ``seed``); actions are sampled
        from a generator seeded with ``seed``, or are the most likely ones when ``greedy`` (default:
        the config's ``eval_greedy``), so the training random state is untouched.
        """
        greedy = self.config.eval_greedy if greedy is None else greedy
        if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
            raise ValueError(f"episodes must be an integer >= 1, got {episodes!r}")
        env = BatchedDSAEnv(self.env_config, self.S * episodes, copy=False)
        env.rng_states = np.tile(seed_states(seed, episodes), self.S)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        *_, rewards = self._play(env, episodes, generator, greedy=greedy, record=False)
        return rewards.sum(0).mean(1).tolist()

    def state_dict(self) -> dict:
        """Everything an exact resume needs (networks, optimisers, pruner, statistics, random states)."""
        return {
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(), "critic_optimizer": self.critic_optimizer.state_dict(),
            "pruner": self.pruner.state_dict() if self.pruner is not None else None,
            "reward_normalizer": self.reward_normalizer.state_dict(),
            "generator": self.generator.get_state(), "shuffle_generator": self.shuffle_generator.get_state(),
            "env_states": self.env.rng_states,
        }

    def load_state_dict(self, state: dict) -> None:
        self._restore(state)
        if self.pruner is not None:
            self.pruner.load_state_dict(state["pruner"])
        self.reward_normalizer.load_state_dict(state["reward_normalizer"])
        self.generator.set_state(state["generator"])
        self.shuffle_generator.set_state(state["shuffle_generator"])
        self.env.rng_states = np.array(state["env_states"], dtype=np.uint64)


def _mix_seeds(seeds, stream: int) -> int:
    """A 63-bit seed for one purpose (``stream``) derived from the training seeds."""
    return int(np.random.SeedSequence([*seeds, stream]).generate_state(2, np.uint64)[0] >> np.uint64(1))
