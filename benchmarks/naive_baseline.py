"""NAIVE BASELINES, for the training-throughput benchmarks only: what a first, straightforward
implementation of IAGC-PPO (``NaiveIAGCPPO``) and of recurrent DQN with parameter sharing
(``NaiveRecurrentDQN``) looks like. Not used by hapruned. ``NaiveIAGCPPO`` has

- one ``torch.nn.LSTM`` + ``torch.nn.Linear`` per agent (a Python list of modules) and one critic;
- ONE environment stepped at a time in plain Python/NumPy, with a loop over agents inside the step
  and a loop over agents for every action;
- the same work per iteration as :class:`hapruned.algos.ppo.IAGCPPO`: ``envs_per_iteration`` episodes
  of ``horizon`` slots, reward normalisation, GAE, ``epochs`` x ``minibatches`` clipped-PPO steps with
  full-episode BPTT from zero states, entropy bonus, per-agent gradient clipping, Adam, and a
  magnitude-prune step every ``i_prune`` iterations.

Each takes the same :class:`~hapruned.algos.config.TrainConfig` as its hapruned counterpart, so both
sides of a benchmark do the same amount of learning work.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

FEEDBACK_SLOT = {0: 0, 1: 1, -1: 2, -2: 3}  # feedback code -> one-hot slot, as hapruned.env.encoding


class NaiveDSAEnv:
    """One DSA environment (docs/design.md §1) in plain Python: per-user loops, NumPy random draws."""

    def __init__(self, n_users, n_channels, horizon, pu_prob, snr_low=30.0, snr_high=40.0, seed=0):
        self.n_users, self.n_channels, self.horizon = n_users, n_channels, horizon
        self.pu_prob, self.snr_low, self.snr_high = pu_prob, snr_low, snr_high
        self.rng = np.random.default_rng(seed)

    def reset(self):
        """Returns the first observation of every user: a list of (last action, last feedback)."""
        self.snr = self.rng.uniform(self.snr_low, self.snr_high, size=(self.n_users, self.n_channels))
        self.pu_busy = self.rng.random(self.n_channels) < self.pu_prob
        self.t = 0
        return [(0, 0)] * self.n_users

    def step(self, actions):
        """actions: list of N ints in 0..K -> (observations, shared reward)."""
        counts = [0] * (self.n_channels + 1)
        for a in actions:
            counts[a] += 1
        obs, reward = [], 0.0
        for n, a in enumerate(actions):
            if a == 0:
                code = 0
            elif self.pu_busy[a - 1]:
                code = -2
            elif counts[a] == 1:
                code = 1
                reward += math.log2(1.0 + self.snr[n, a - 1])
            else:
                code = -1
            obs.append((a, code))
        self.t += 1
        self.pu_busy = self.rng.random(self.n_channels) < self.pu_prob
        return obs, reward


class NaiveLearner:
    """What both naive learners set up: the sizes, the torch seed and one plain environment."""

    def __init__(self, config):
        self.config = cfg = config
        torch.manual_seed(cfg.seed)
        self.N, self.K, self.T = cfg.n_users, cfg.n_channels, cfg.horizon
        self.F = self.K + 5
        pu_prob = 0.2 if cfg.setup == "B" else 0.0
        self.env = NaiveDSAEnv(self.N, self.K, self.T, pu_prob, seed=cfg.seed)


class NaiveIAGCPPO(NaiveLearner):
    """IAGC-PPO written the obvious way; ``train_iteration(i)`` returns ``{"agent_steps": ...}``."""

    def __init__(self, config):
        super().__init__(config)
        cfg = config
        self.actors = nn.ModuleList(nn.LSTM(self.F, cfg.hidden_size, cfg.num_layers) for _ in range(self.N))
        self.heads = nn.ModuleList(nn.Linear(cfg.hidden_size, self.K + 1) for _ in range(self.N))
        self.critic = nn.LSTM(self.F, cfg.hidden_size, cfg.num_layers)
        self.critic_head = nn.Linear(cfg.hidden_size, 1)
        self.actor_optimizer = torch.optim.Adam([*self.actors.parameters(), *self.heads.parameters()], lr=cfg.actor_lr)
        self.critic_optimizer = torch.optim.Adam([*self.critic.parameters(), *self.critic_head.parameters()], lr=cfg.critic_lr)
        self.return_var, self.return_count = 1.0, 0

    def encode(self, a, o):
        x = torch.zeros(1, 1, self.F)
        x[0, 0, a] = 1.0
        x[0, 0, self.K + 1 + FEEDBACK_SLOT[o]] = 1.0
        return x

    @torch.no_grad()
    def rollout(self):
        """Play envs_per_iteration episodes one after the other, one agent at a time."""
        episodes = []
        for _ in range(self.config.envs_per_iteration):
            obs = self.env.reset()
            actor_state = [None] * self.N
            critic_state = [None] * self.N
            inputs, actions, log_probs, values, rewards = [], [], [], [], []
            for _ in range(self.T):
                xs, acts, lps, vals = [], [], [], []
                for n in range(self.N):
                    x = self.encode(*obs[n])
                    out, actor_state[n] = self.actors[n](x, actor_state[n])
                    dist = torch.distributions.Categorical(logits=self.heads[n](out[0, 0]))
                    action = dist.sample()
                    v_out, critic_state[n] = self.critic(x, critic_state[n])
                    xs.append(x[0, 0])
                    acts.append(int(action))
                    lps.append(float(dist.log_prob(action)))
                    vals.append(float(self.critic_head(v_out[0, 0])))
                obs, reward = self.env.step(acts)
                inputs.append(torch.stack(xs))
                actions.append(acts)
                log_probs.append(lps)
                values.append(vals)
                rewards.append(reward)
            episodes.append((torch.stack(inputs), actions, log_probs, values, rewards))
        inputs = torch.stack([e[0] for e in episodes], 1)  # (T, B, N, F)
        actions = torch.tensor([e[1] for e in episodes]).transpose(0, 1)  # (T, B, N)
        log_probs = torch.tensor([e[2] for e in episodes]).transpose(0, 1)
        values = torch.tensor([e[3] for e in episodes]).transpose(0, 1)
        rewards = torch.tensor([e[4] for e in episodes]).T  # (T, B)
        return inputs, actions, log_probs, values, rewards

    def normalize(self, rewards):
        """Divide by a running std of the discounted return (population variance, merged per batch)."""
        returns = torch.zeros_like(rewards)
        running = torch.zeros(rewards.shape[1], dtype=rewards.dtype)
        for t in range(rewards.shape[0]):
            running = running * self.config.gamma + rewards[t]
            returns[t] = running
        n = returns.numel()
        var = float(returns.var(unbiased=False))
        total = self.return_count + n
        self.return_var = (self.return_var * self.return_count + var * n) / total
        self.return_count = total
        return rewards / math.sqrt(self.return_var + 1e-8)

    def gae(self, rewards, values):
        """rewards (T, B), values (T, B, N) -> advantages, returns (T, B, N); episodes end after T."""
        cfg = self.config
        advantages = torch.zeros_like(values)
        running = torch.zeros_like(values[0])
        next_value = torch.zeros_like(values[0])
        for t in reversed(range(self.T)):
            delta = rewards[t, :, None] + cfg.gamma * next_value - values[t]
            running = delta + cfg.gamma * cfg.gae_lambda * running
            advantages[t] = running
            next_value = values[t]
        return advantages, advantages + values

    def update(self, inputs, actions, old_log_probs, advantages, returns):
        cfg = self.config
        B = cfg.envs_per_iteration
        size = B // cfg.minibatches
        for _ in range(cfg.epochs):
            order = torch.randperm(B)
            for start in range(0, B, size):
                idx = order[start:start + size]
                actor_loss = 0.0
                for n in range(self.N):
                    out, _ = self.actors[n](inputs[:, idx, n])
                    dist = torch.distributions.Categorical(logits=self.heads[n](out))
                    log_prob = dist.log_prob(actions[:, idx, n])
                    adv = advantages[:, idx, n]
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                    ratio = (log_prob - old_log_probs[:, idx, n]).exp()
                    surrogate = torch.min(ratio * adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv)
                    actor_loss = actor_loss - surrogate.mean() - cfg.entropy_coef * dist.entropy().mean()
                critic_in = inputs[:, idx].reshape(self.T, -1, self.F)  # every agent's own sequence
                v_out, _ = self.critic(critic_in)
                values = self.critic_head(v_out).squeeze(-1)
                critic_loss = 0.5 * (values - returns[:, idx].reshape(self.T, -1)).pow(2).mean()
                self.actor_optimizer.zero_grad()
                self.critic_optimizer.zero_grad()
                (actor_loss + critic_loss).backward()
                for n in range(self.N):
                    nn.utils.clip_grad_norm_([*self.actors[n].parameters(), *self.heads[n].parameters()], cfg.max_grad_norm)
                nn.utils.clip_grad_norm_([*self.critic.parameters(), *self.critic_head.parameters()], cfg.max_grad_norm)
                self.actor_optimizer.step()
                self.critic_optimizer.step()

    @torch.no_grad()
    def prune(self, iteration):
        """Zero each agent's smallest-magnitude weights (a linear ramp to config.sparsity)."""
        cfg = self.config
        target = cfg.sparsity * min(1.0, iteration / cfg.iterations)
        for n in range(self.N):
            weights = [p for name, p in self.actors[n].named_parameters() if "weight" in name] + [self.heads[n].weight]
            flat = torch.cat([w.abs().flatten() for w in weights])
            k = round(target * flat.numel())
            if k == 0:
                continue
            threshold = flat.kthvalue(k).values
            for w in weights:
                w[w.abs() <= threshold] = 0.0

    def train_iteration(self, iteration: int) -> dict:
        inputs, actions, log_probs, values, rewards = self.rollout()
        advantages, returns = self.gae(self.normalize(rewards), values)
        self.update(inputs, actions, log_probs, advantages, returns)
        if self.config.method != "dense" and iteration % self.config.i_prune == 0:
            self.prune(iteration)
        return {"episode_reward": float(rewards.sum(0).mean()),
                "agent_steps": self.N * self.config.envs_per_iteration * self.T}


class NaiveRecurrentDQN(NaiveLearner):
    """Recurrent DQN with parameter sharing written the obvious way: one ``nn.LSTM`` + ``nn.Linear``
    Q-network shared by the agents and its target copy, ONE environment stepped at a time with a
    loop over agents for every action, a Python list of episodes as the replay buffer. The same work
    per iteration as :class:`hapruned.algos.dqn.RecurrentDQN`: ``envs_per_iteration`` epsilon-greedy
    episodes, then ``updates_per_iteration`` Double-DQN steps on ``replay_batch`` whole episodes (every
    agent's sequence) with Huber loss, gradient clipping, Adam and hard target copies."""

    def __init__(self, config):
        super().__init__(config)
        cfg = config
        self.rng = np.random.default_rng(cfg.seed)
        self.lstm = nn.LSTM(self.F, cfg.hidden_size, cfg.num_layers)
        self.head = nn.Linear(cfg.hidden_size, self.K + 1)
        self.target_lstm, self.target_head = copy.deepcopy(self.lstm), copy.deepcopy(self.head)
        self.optimizer = torch.optim.Adam([*self.lstm.parameters(), *self.head.parameters()], lr=cfg.actor_lr)
        self.replay, self.updates = [], 0

    def encode(self, a, o):
        x = torch.zeros(self.F)
        x[a] = 1.0
        x[self.K + 1 + FEEDBACK_SLOT[o]] = 1.0
        return x

    @torch.no_grad()
    def play(self, epsilon):
        """One episode; returns (inputs (T, N, F), actions (T, N), rewards (T,))."""
        obs = self.env.reset()
        state = [None] * self.N
        inputs, actions, rewards = [], [], []
        for _ in range(self.T):
            xs, acts = [], []
            for n in range(self.N):
                x = self.encode(*obs[n])
                out, state[n] = self.lstm(x.view(1, 1, -1), state[n])
                action = int(self.head(out[0, 0]).argmax())
                if self.rng.random() < epsilon:
                    action = int(self.rng.integers(self.K + 1))
                xs.append(x)
                acts.append(action)
            obs, reward = self.env.step(acts)
            inputs.append(torch.stack(xs))
            actions.append(acts)
            rewards.append(reward)
        return torch.stack(inputs), torch.tensor(actions), torch.tensor(rewards)

    def update(self):
        cfg = self.config
        batch = [self.replay[i] for i in self.rng.integers(len(self.replay), size=cfg.replay_batch)]
        inputs = torch.cat([e[0] for e in batch], 1)  # (T, b*N, F)
        actions = torch.cat([e[1] for e in batch], 1)
        rewards = torch.cat([e[2].unsqueeze(1).expand(-1, self.N) for e in batch], 1)
        q = self.head(self.lstm(inputs)[0])
        with torch.no_grad():
            q_next = self.target_head(self.target_lstm(inputs)[0])
            best = q[1:].argmax(-1, keepdim=True)
            targets = rewards.clone().float()
            targets[:-1] += cfg.gamma * q_next[1:].gather(-1, best).squeeze(-1)
        loss = nn.functional.huber_loss(q.gather(-1, actions.unsqueeze(-1)).squeeze(-1), targets)
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_([*self.lstm.parameters(), *self.head.parameters()], cfg.max_grad_norm)
        self.optimizer.step()
        self.updates += 1
        if self.updates % cfg.target_update == 0:
            self.target_lstm.load_state_dict(self.lstm.state_dict())
            self.target_head.load_state_dict(self.head.state_dict())

    def train_iteration(self, iteration: int) -> dict:
        cfg = self.config
        progress = min(1.0, (iteration - 1) / (cfg.epsilon_decay * cfg.iterations))
        epsilon = cfg.epsilon_start + (cfg.epsilon_end - cfg.epsilon_start) * progress
        episodes = [self.play(epsilon) for _ in range(cfg.envs_per_iteration)]
        self.replay = (self.replay + episodes)[-cfg.replay_capacity:]
        for _ in range(cfg.updates_per_iteration):
            self.update()
        return {"episode_reward": float(np.mean([float(e[2].sum()) for e in episodes])),
                "agent_steps": self.N * cfg.envs_per_iteration * self.T}
