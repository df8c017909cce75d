"""Recurrent DQN with full parameter sharing (Naparstek & Cohen 2019, the paper's [8] baseline).

One Q-network per seed (LSTM -> linear, the actors' architecture, with one output per action) is
shared by all the seed's agents: at execution every agent runs an identical clone, on its own inputs
and its own recurrent state. In the grouped ops that is one group per seed whose batch holds
environments x agents, so no loop over agents.

- Acting: epsilon-greedy on the Q-values; epsilon falls linearly from ``epsilon_start`` to
  ``epsilon_end`` over the first ``epsilon_decay`` fraction of the iterations.
- Replay: a preallocated ring buffer of whole episodes (``replay_capacity`` per seed), stored as the
  inputs (uint8 one-hots; float32 with ``observe_snr``, whose SNR feature uint8 cannot hold), the
  actions (int16) and the raw rewards; rewards are scaled at sampling time by the
  current running return std (``normalize_rewards``), so old and new episodes share one scale.
- Update: ``updates_per_iteration`` times, ``replay_batch`` episodes drawn uniformly (with
  replacement) run through the online and target networks from zero states (full sequences, as
  the actor-critics' bootstrapped sequential updates); Double DQN targets
  ``y_t = r_t + gamma * Q_target(s_{t+1}, argmax_a Q_online(s_{t+1}, a))`` with ``y_{T-1} = r_{T-1}``
  (episodes end at the horizon); Huber loss; per-seed gradient clipping; Adam at ``actor_lr``.
- Target network: a hard copy every ``target_update`` updates, or Polyak averaging with rate
  ``target_tau`` after every update when it is > 0.
- Evaluation acts epsilon-greedily with ``eval_epsilon`` (0 with ``eval_greedy``). All agents hold the
  same network and see the same first observation, so a purely greedy policy makes every agent pick
  the same channel in the first slot, and agents whose histories stay equal keep colliding; a small
  epsilon is what lets identical clones break that symmetry, as it did in training.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from hapruned.algos.config import TrainConfig
from hapruned.algos.learner import Learner, clip_grad_norm_per_group, mix_seeds
from hapruned.algos.models import GroupedActor, init_group_


def double_dqn_targets(rewards: torch.Tensor, q_online: torch.Tensor, q_target: torch.Tensor, gamma: float):
    """Double DQN targets of episodes that end after their last step.

    rewards (T, ...); q_online, q_target (T, ..., A): the Q-values of the states s_0 .. s_{T-1} by the
    online and the target network. Returns (T, ...): ``r_t + gamma * q_target[t+1, a*]`` with
    ``a* = argmax_a q_online[t+1, a]`` for t < T-1, and ``r_{T-1}`` at the last step.
    """
    best = q_online[1:].argmax(-1, keepdim=True)
    targets = rewards.clone()
    targets[:-1] += gamma * q_target[1:].gather(-1, best).squeeze(-1)
    return targets


class EpisodeReplay:
    """A ring buffer of whole episodes per seed, preallocated: inputs (S, C, T, N, F), actions int16
    (S, C, T, N), raw rewards float64 (S, C, T). Every seed stores the same number of episodes. The inputs
    are stored exactly, as ``input_dtype``: uint8 holds the one-hot features, float32 the SNR feature too."""

    def __init__(self, seeds: int, capacity: int, horizon: int, agents: int, features: int, device,
                 input_dtype: torch.dtype = torch.uint8):
        self.capacity = capacity
        self.inputs = torch.zeros(seeds, capacity, horizon, agents, features, dtype=input_dtype, device=device)
        self.actions = torch.zeros(seeds, capacity, horizon, agents, dtype=torch.int16, device=device)
        self.rewards = torch.zeros(seeds, capacity, horizon, dtype=torch.float64, device=device)
        self.position, self.size = 0, 0

    def add(self, inputs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor) -> None:
        """Store B episodes per seed: inputs (T, S*N, B, F), actions (T, S*N, B), rewards (T, S, B)."""
        T, S, B = rewards.shape
        N = actions.shape[1] // S
        slots = (self.position + torch.arange(B)) % self.capacity
        self.inputs[:, slots] = inputs.view(T, S, N, B, -1).permute(1, 3, 0, 2, 4).to(self.inputs.dtype)
        self.actions[:, slots] = actions.view(T, S, N, B).permute(1, 3, 0, 2).to(self.actions.dtype)
        self.rewards[:, slots] = rewards.permute(1, 2, 0).to(self.rewards)
        self.position = (self.position + B) % self.capacity
        self.size = min(self.size + B, self.capacity)

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Indices (S, batch) of stored episodes, uniform with replacement, independently per seed."""
        if self.size == 0:
            raise RuntimeError("the replay buffer is empty; add episodes before sampling")
        return torch.randint(self.size, (self.rewards.shape[0], batch), generator=generator)

    def episodes(self, index: torch.Tensor):
        """The episodes at ``index`` (S, b), time-major for the networks: inputs float (T, S, b, N, F),
        actions int64 (T, S, b, N), raw rewards (T, S, b)."""
        seeds = torch.arange(index.shape[0]).unsqueeze(1)
        inputs = self.inputs[seeds, index].permute(2, 0, 1, 3, 4).float()
        actions = self.actions[seeds, index].permute(2, 0, 1, 3).long()
        return inputs, actions, self.rewards[seeds, index].permute(2, 0, 1)

    def state_dict(self) -> dict:
        return {"inputs": self.inputs, "actions": self.actions, "rewards": self.rewards,
                "position": self.position, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        for name in ("inputs", "actions", "rewards"):
            getattr(self, name).copy_(state[name])
        self.position, self.size = state["position"], state["size"]


class RecurrentDQN(Learner):
    """The DQN learner: a shared Q-network and its target per seed, replay, optimiser, environments."""

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        cfg = self.config
        if cfg.algo != "dqn":
            raise ValueError(f"RecurrentDQN trains algo dqn, got {cfg.algo!r}")
        S, A = self.S, self.K + 1
        self.q = GroupedActor(S, self.F, cfg.hidden_size, cfg.num_layers, A, device=self.device)
        for s, seed in enumerate(self.seeds):
            init = torch.Generator().manual_seed(seed)
            for module in (self.q.lstm, self.q.head):
                init_group_(module, s, init, cfg.init)
        self.target = copy.deepcopy(self.q).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.q.parameters(), lr=cfg.actor_lr, fused=True)
        self.replay = EpisodeReplay(S, cfg.replay_capacity, cfg.horizon, self.N, self.F, self.device,
                                    torch.float32 if cfg.observe_snr else torch.uint8)
        self.sample_generator = torch.Generator().manual_seed(mix_seeds(self.seeds, 2))
        self.updates = 0
        self.epsilon = cfg.epsilon_start

    def epsilon_at(self, iteration: int) -> float:
        """The exploration rate of ``iteration``'s rollout (1..iterations)."""
        cfg = self.config
        progress = min(1.0, (iteration - 1) / (cfg.epsilon_decay * cfg.iterations))
        return cfg.epsilon_start + (cfg.epsilon_end - cfg.epsilon_start) * progress

    def _act(self, x, state, generator, training, greedy):
        S, G, b = self.S, self.G, x.shape[1]
        q, state = self.q(x.reshape(1, S, self.N * b, self.F), state)
        q = q[0].view(G, b, -1)
        action = q.argmax(-1)
        epsilon = self.epsilon if training else (0.0 if greedy else self.config.eval_epsilon)
        if epsilon > 0:
            explore = torch.rand(G, b, generator=generator, device=self.device) < epsilon
            random = torch.randint(q.shape[-1], (G, b), generator=generator, device=self.device)
            action = torch.where(explore, random, action)
        return action, None, state

    def train_iteration(self, iteration: int) -> dict:
        """Rollout with epsilon-greedy exploration -> store the episodes -> ``updates_per_iteration``
        sequence updates. ``episode_reward`` as in the actor-critics; ``loss`` and ``q_mean`` averaged
        over the updates; ``sparsity`` all zero (the network is dense)."""
        cfg = self.config
        S, N, B, T = self.S, self.N, cfg.envs_per_iteration, self.env_config.horizon
        self.epsilon = self.epsilon_at(iteration)
        inputs, actions, _, raw_rewards, _ = self._play(self.env, B, self.generator)
        self.replay.add(inputs, actions, raw_rewards)
        if cfg.normalize_rewards:
            self.reward_normalizer.update(raw_rewards)

        snapshot = copy.deepcopy({"q": self.q.state_dict(), "target": self.target.state_dict(),
                                  "optimizer": self.optimizer.state_dict(), "updates": self.updates})
        stats = {"loss": [], "q_mean": [], "grad_norm": []}
        for _ in range(cfg.updates_per_iteration):
            try:
                self._update(stats)
            except FloatingPointError:
                self._restore(snapshot)
                raise
        episode = raw_rewards.sum(0)  # (S, B)
        metrics = {k: float(np.mean(v)) for k, v in stats.items()}
        metrics.update({
            "episode_reward": float(episode.mean()),
            "episode_reward_per_seed": episode.mean(1).tolist(),
            "epsilon": self.epsilon,
            "replay_size": self.replay.size,
            "sparsity": [0.0] * N,
            "target_sparsity": [0.0] * N,
            "agent_steps": N * S * B * T,
        })
        return metrics

    def _update(self, stats: dict) -> None:
        """One Double-DQN step on ``replay_batch`` episodes per seed."""
        cfg = self.config
        S, N = self.S, self.N
        inputs, actions, rewards = self.replay.episodes(self.replay.sample(cfg.replay_batch, self.sample_generator))
        T, _, b = rewards.shape
        if cfg.normalize_rewards:
            rewards = self.reward_normalizer.scale(rewards)
        # every agent of an episode gets the shared reward; batch index = episode * N + agent
        rewards = rewards.float().unsqueeze(-1).expand(T, S, b, N).reshape(T, S, b * N)
        x = inputs.reshape(T, S, b * N, self.F).to(self.device)
        q_all, _ = self.q(x)
        with torch.no_grad():
            q_next, _ = self.target(x)
            targets = double_dqn_targets(rewards.to(self.device), q_all.detach(), q_next, cfg.gamma)
        q_taken = q_all.gather(-1, actions.reshape(T, S, b * N, 1).to(self.device)).squeeze(-1)
        per_seed = F.huber_loss(q_taken, targets, reduction="none").mean((0, 2))
        loss = per_seed.sum()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()}; parameters restored")
        self.optimizer.zero_grad(set_to_none=False)
        loss.backward()
        norms = clip_grad_norm_per_group(list(self.q.parameters()), cfg.max_grad_norm)
        if not torch.isfinite(norms).all():
            raise FloatingPointError("non-finite gradient; parameters restored")
        self.optimizer.step()
        self.updates += 1
        self._update_target()
        stats["loss"].append(float(per_seed.detach().mean()))
        stats["q_mean"].append(float(q_taken.detach().mean()))
        stats["grad_norm"].append(float(norms.mean()))

    @torch.no_grad()
    def _update_target(self) -> None:
        if self.config.target_tau > 0:
            for target, online in zip(self.target.parameters(), self.q.parameters()):
                target.lerp_(online, self.config.target_tau)
        elif self.updates % self.config.target_update == 0:
            self.target.load_state_dict(self.q.state_dict())

    def _restore(self, snapshot: dict) -> None:
        self.q.load_state_dict(snapshot["q"])
        self.target.load_state_dict(snapshot["target"])
        self.optimizer.load_state_dict(snapshot["optimizer"])
        self.updates = snapshot["updates"]

    def state_dict(self) -> dict:
        """Everything an exact resume needs (networks, optimiser, replay, counters, random states)."""
        return {
            "q": self.q.state_dict(), "target": self.target.state_dict(), "optimizer": self.optimizer.state_dict(),
            "updates": self.updates, "replay": self.replay.state_dict(),
            "sample_generator": self.sample_generator.get_state(),
            **self._common_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self._restore(state)
        self.replay.load_state_dict(state["replay"])
        self.sample_generator.set_state(state["sample_generator"])
        self._load_common_state(state)
