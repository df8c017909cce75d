"""The IAGC actor-critic family: independent LSTM actors, one global LSTM critic (paper Section III;
decisions in docs/design.md §2). Three update rules share everything else:

- ``ppo`` (IAGC-PPO, the paper's method): ``epochs`` of clipped PPO over each iteration's episodes,
  then a prune step of the actors' schedule;
- ``ac`` (the paper's plain "IAGC" baseline): one gradient step of ``-log pi(a) * A - c * H`` per
  iteration's batch of episodes, no probability ratio, no clipping, no epochs;
- ``pai`` (PaI with parameter sharing, the paper's [18]): PPO on one set of actor weights per seed
  shared by all its agents, each agent a distinct sparse subnetwork under its own fixed random mask
  (drawn at initialisation, never changed); a shared weight's gradient is the sum of the agents'
  masked gradients.

One iteration = sample ``envs_per_iteration`` synchronous episodes of every training seed -> the
update -> a prune step. Several seeds train side by side: their actors are extra groups of the same
grouped tensors (groups = seeds x agents, seed-major), each seed has its own critic group, its own
environments and its own reward statistics, and every loss is a sum of per-group means with
per-group gradient clipping, so the seeds do not influence each other.

Decisions the paper leaves open:

- Rewards are divided by a running standard deviation of the discounted return (per seed), as
  gymnasium's ``NormalizeReward``; the episode reward reported is the raw ``sum_t r_t``.
- The critic's value of agent n uses agent n's own input sequence (``critic_input="own"``) or all
  agents' inputs concatenated (``"joint"``, one value per environment). Episodes end at the horizon,
  so the value after the last slot is zero. Advantages come from GAE per agent (shared reward).
- The update runs the whole episode through the LSTMs from zero states (full BPTT); minibatches are
  sets of environments, so sequences stay whole. Advantages are standardised per agent and minibatch.
- PaI's masks are exact: ``round(p * M)`` of each agent's M actor weights, at uniformly random
  positions (all weight matrices together, like the pruner's per-agent threshold).
- A NaN or infinite loss or gradient raises ``FloatingPointError``; the networks and optimisers are
  restored to their state before the update first.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from hapruned import ops
from hapruned.algos.config import TrainConfig
from hapruned.algos.learner import Learner, clip_grad_norm_per_group, mix_seeds
from hapruned.algos.models import GroupedActor, GroupedCritic, init_group_
from hapruned.nn import sample_actions
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


class IAGCPPO(Learner):
    """The actor-critic learner of ``algo`` ppo, ac or pai: grouped actors and critics, their
    optimisers, the pruner (or PaI's fixed masks) and the environments (shapes: see ``Learner``)."""

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        cfg = self.config
        if cfg.algo not in ("ppo", "ac", "pai"):
            raise ValueError(f"IAGCPPO trains algo ppo, ac or pai, got {cfg.algo!r}")
        S, N, G = self.S, self.N, self.G
        shared = cfg.algo == "pai"
        self.actor = GroupedActor(G, self.F, cfg.hidden_size, cfg.num_layers, self.K + 1, device=self.device,
                                  share=N if shared else 1)
        critic_in = self.F if cfg.critic_input == "own" else N * self.F
        # a joint critic sees one environment: with per-agent rewards it needs one value per agent
        heads = N if cfg.critic_input == "joint" and cfg.reward == "difference" else 1
        self.critic = GroupedCritic(S, critic_in, cfg.hidden_size, cfg.num_layers, device=self.device, heads=heads)
        for s, seed in enumerate(self.seeds):
            init = torch.Generator().manual_seed(seed)
            # orthogonal: a small policy head starts every agent near the uniform policy
            for module, gain in ((self.actor.lstm, 1.0), (self.actor.head, 0.01)):
                for group in ([s] if shared else range(s * N, (s + 1) * N)):
                    init_group_(module, group, init, cfg.init, gain)
            for module in (self.critic.lstm, self.critic.head):
                init_group_(module, s, init, cfg.init)
            if shared:
                self._draw_pai_masks(s, init)
        # fused: one pass over each tensor per step, instead of a pass per Adam operation
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr, fused=True)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, fused=True)

        self.pruner = None
        if cfg.method != "dense" and not shared:
            schedule = make_schedule(
                cfg.method, list(cfg.agent_targets) * S, groups=G, i_end=cfg.i_end or cfg.iterations,
                i_start=cfg.i_start, p0=cfg.p0, amplitude=cfg.amplitude, period=cfg.schedule_period,
            )
            self.pruner = Pruner(
                self.actor, self.actor.prunable_names, schedule, mode=cfg.prune_mode, i_prune=cfg.i_prune,
                i_start=cfg.i_start, total_iterations=cfg.iterations, optimizer=self.actor_optimizer,
                per_matrix=cfg.per_matrix,
            )
        # minibatch order
        self.shuffle_generator = torch.Generator().manual_seed(mix_seeds(self.seeds, 2))

    @torch.no_grad()
    def _draw_pai_masks(self, s: int, generator: torch.Generator) -> None:
        """Seed s's agents each get a random keep-mask with exactly round(p * M) of their M weights pruned."""
        N, masks = self.N, []
        for name in self.actor.prunable_names:
            owner_name, _, attr = name.rpartition(".")
            owner = self.actor.get_submodule(owner_name)
            if getattr(owner, attr + "_mask") is None:
                weight = getattr(owner, attr)
                setattr(owner, attr + "_mask", torch.ones((self.G,) + weight.shape[1:], dtype=torch.bool, device=self.device))
            masks.append(getattr(owner, attr + "_mask"))
        sizes = [mask[0].numel() for mask in masks]
        # random scores ranked by the exact prune-mask op: round(p * M) pruned, at uniformly random places
        scores = torch.rand(N, sum(sizes), generator=generator, dtype=torch.float64)
        keep = ops.magnitude_prune_mask(scores, torch.tensor(self.config.agent_targets, dtype=torch.float64))
        for mask, part in zip(masks, keep.split(sizes, dim=1)):
            mask[s * N:(s + 1) * N] = part.reshape((N,) + mask.shape[1:]).to(self.device)
        for module in (self.actor.lstm, self.actor.head):  # the masks changed in place
            module.update_sparse_layouts()

    # ------------------------------------------------------------------ rollout
    def _act(self, x, state, generator, training, greedy):
        logits, state = self.actor(x.unsqueeze(0), state)
        logits = logits[0]
        action = sample_actions(logits, greedy, generator)
        log_prob = torch.log_softmax(logits, -1).gather(-1, action.unsqueeze(-1)).squeeze(-1) if training else None
        return action, log_prob, state

    def _values(self, inputs: torch.Tensor) -> torch.Tensor:
        """Critic values of every agent: inputs (T, G, b, F) -> (T, G, b), one sequence forward."""
        T, _, b, F = inputs.shape
        x = inputs.view(T, self.S, self.N, b, F)
        if self.config.critic_input == "own":
            return self.critic(x.reshape(T, self.S, self.N * b, F)).view(T, self.G, b)
        joint = x.permute(0, 1, 3, 2, 4).reshape(T, self.S, b, self.N * F)
        values = self.critic(joint)
        if values.ndim == 4:  # one head per agent: (T, S, b, N)
            return values.permute(0, 1, 3, 2).reshape(T, self.G, b)
        return values.unsqueeze(2).expand(T, self.S, self.N, b).reshape(T, self.G, b)

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
        """Rollout -> update -> prune step for ``iteration`` (1..iterations); returns metrics.

        ``episode_reward``: mean raw episode reward over all seeds' episodes (``episode_reward_per_seed``
        per seed); PPO diagnostics averaged over the update's minibatches; ``sparsity``: per agent
        (mean over seeds; ``sparsity_per_seed`` [S][N]), ``target_sparsity`` the schedule's per agent;
        ``agent_steps`` = N * S * B * T.
        """
        cfg = self.config
        S, G, N, B, T = self.S, self.G, self.N, cfg.envs_per_iteration, self.env_config.horizon
        inputs, actions, old_log_probs, raw_rewards, differences = self._play(self.env, B, self.generator)
        with torch.inference_mode():
            values = self._values(inputs)
        if differences is None:  # the team reward, the same for every agent of an environment
            rewards = self.reward_normalizer(raw_rewards) if cfg.normalize_rewards else raw_rewards
            rewards = rewards.unsqueeze(2).expand(T, S, N, B)
        else:  # each agent's own; one return statistic per seed over all its agents
            rewards = differences.reshape(T, S, N * B)
            rewards = (self.reward_normalizer(rewards) if cfg.normalize_rewards else rewards).view(T, S, N, B)
        rewards = rewards.to(values.dtype).to(self.device).reshape(T, G, B)
        advantages, returns = compute_gae(rewards, values, cfg.gamma, cfg.gae_lambda)
        # inference-mode tensors cannot be saved for backward; the update needs ordinary ones
        inputs, actions, old_log_probs = inputs.clone(), actions.clone(), old_log_probs.clone()
        advantages, returns = advantages.clone(), returns.clone()

        snapshot = self._snapshot()
        # ac's single step on a fresh rollout has no ratio, so no approx KL or clip fraction to report
        ratio_stats = () if cfg.algo == "ac" else ("approx_kl", "clip_fraction")
        stats = {k: [] for k in ("actor_loss", "critic_loss", "entropy", *ratio_stats, "actor_grad_norm", "critic_grad_norm")}
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
                                if self.pruner is not None else list(cfg.agent_targets)),
            "pruned": bool(pruned),
            "agent_steps": N * S * B * T,
        })
        return metrics

    def _minibatch_step(self, inputs, actions, old_log_probs, advantages, returns, stats) -> None:
        """One step of actors and critic on a set of whole episodes (all tensors (T, G, b, ...)): clipped PPO,
        or the plain policy gradient for ``ac``."""
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
        if cfg.algo == "ac":
            surrogate = log_probs * advantages
        else:
            surrogate = torch.min(ratio * advantages, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * advantages)
        # a sum over groups of per-group means: each agent's gradient is independent of the others
        per_group = -surrogate.mean((0, 2)) - cfg.entropy_coef * entropy.mean((0, 2))
        actor_loss = per_group.sum()
        values = self._values(inputs)
        critic_loss = 0.5 * (values - returns).pow(2).reshape(values.shape[0], self.S, -1).mean((0, 2)).sum()
        if not (torch.isfinite(actor_loss) and torch.isfinite(critic_loss)):
            raise FloatingPointError(
                f"non-finite loss (actor {actor_loss.item()}, critic {critic_loss.item()}); parameters restored"
            )
        self.actor_optimizer.zero_grad(set_to_none=False)
        self.critic_optimizer.zero_grad(set_to_none=False)
        (actor_loss + critic_loss).backward()
        actor_norms = clip_grad_norm_per_group(list(self.actor.parameters()), cfg.max_grad_norm)
        critic_norms = clip_grad_norm_per_group(list(self.critic.parameters()), cfg.max_grad_norm)
        if not (torch.isfinite(actor_norms).all() and torch.isfinite(critic_norms).all()):
            raise FloatingPointError("non-finite gradient; parameters restored")
        self.actor_optimizer.step()
        self.critic_optimizer.step()
        with torch.no_grad():
            stats["actor_loss"].append(float(per_group.mean()))
            stats["critic_loss"].append(float(critic_loss) / self.S)
            stats["entropy"].append(float(entropy.mean()))
            if "approx_kl" in stats:
                stats["approx_kl"].append(float(((ratio - 1) - log_ratio).mean()))
                stats["clip_fraction"].append(float(((ratio - 1).abs() > cfg.clip).float().mean()))
            stats["actor_grad_norm"].append(float(actor_norms.mean()))
            stats["critic_grad_norm"].append(float(critic_norms.mean()))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything an exact resume needs (networks, optimisers, pruner, statistics, random states)."""
        return {
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(), "critic_optimizer": self.critic_optimizer.state_dict(),
            "pruner": self.pruner.state_dict() if self.pruner is not None else None,
            "shuffle_generator": self.shuffle_generator.get_state(),
            **self._common_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self._restore(state)
        if self.pruner is not None:
            self.pruner.load_state_dict(state["pruner"])
        self.shuffle_generator.set_state(state["shuffle_generator"])
        self._load_common_state(state)
