"""The IAGC networks (paper Section III-a, docs/design.md §2), stored grouped so one op serves every agent.

Actors: one LSTM(num_layers x hidden) -> linear -> softmax per group, where a group is one agent of
one training seed (groups = seeds x agents). Critic: one dense LSTM -> linear -> scalar per seed,
shared by that seed's agents (its batch holds envs x agents when it reads each agent's own input).
Sequences are time-major: x (time, groups, batch, features).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hapruned.nn import GroupedLinear, GroupedLSTM


def init_group_(module: nn.Module, group: int, generator: torch.Generator, scheme: str = "uniform",
                gain: float = 1.0) -> None:
    """Redraw group ``group`` of every parameter of ``module`` from ``generator``, so a seed's networks do
    not depend on the global RNG or on which other seeds share the module. ``uniform``: PyTorch's LSTM
    and Linear defaults, U(-1/sqrt(fan), 1/sqrt(fan)), LSTM biases the sum of two such draws;
    ``orthogonal``: each weight matrix orthogonal times ``gain``, biases zero (common PPO practice)."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if scheme == "orthogonal":
                draw = torch.zeros(param.shape[1:], dtype=param.dtype)
                if not name.startswith("bias"):
                    nn.init.orthogonal_(draw, gain, generator=generator)
            else:
                fan = module.weight.shape[-1] if isinstance(module, GroupedLinear) else module.hidden_size
                bound = 1.0 / math.sqrt(fan)
                draw = torch.empty(param.shape[1:], dtype=param.dtype).uniform_(-bound, bound, generator=generator)
                if isinstance(module, GroupedLSTM) and name.startswith("bias"):
                    draw += torch.empty_like(draw).uniform_(-bound, bound, generator=generator)
            param[group].copy_(draw.to(param.device))


class GroupedActor(nn.Module):
    """``groups`` policies: LSTM -> linear -> logits over ``n_actions``; independent, or with ``share`` > 1
    groups on each set of weights (distinct only through their masks)."""

    def __init__(self, groups: int, input_size: int, hidden_size: int, num_layers: int, n_actions: int, device=None,
                 share: int = 1):
        super().__init__()
        self.lstm = GroupedLSTM(groups, input_size, hidden_size, num_layers, device=device, share=share)
        self.head = GroupedLinear(groups, hidden_size, n_actions, device=device, share=share)

    @property
    def prunable_names(self) -> list[str]:
        """Every weight matrix (both LSTM weights of each layer and the head); never biases."""
        names = [f"lstm.weight_{kind}_l{k}" for k in range(self.lstm.num_layers) for kind in ("ih", "hh")]
        return names + ["head.weight"]

    def forward(self, x: torch.Tensor, state=None):
        """x (time, groups, batch, input) -> (logits (time, groups, batch, n_actions), (h, c))."""
        y, state = self.lstm(x, state)
        return self.head(y), state

    @torch.no_grad()
    def sparsity(self) -> torch.Tensor:
        """Fraction of zero effective weights (weight times its mask, if any) per group, float64 ``[groups]``."""
        zeros, total = 0, 0
        for name in self.prunable_names:
            owner_name, _, attr = name.rpartition(".")
            owner = self.get_submodule(owner_name)
            weight, mask = owner.per_group(getattr(owner, attr)), getattr(owner, f"{attr}_mask")
            effective = weight if mask is None else weight * mask
            zeros = zeros + (effective.flatten(1) == 0).sum(1)
            total += weight[0].numel()
        return zeros.double().cpu() / total


class GroupedCritic(nn.Module):
    """One dense value network per seed: LSTM -> linear -> ``heads`` values (one, or one per agent)."""

    def __init__(self, seeds: int, input_size: int, hidden_size: int, num_layers: int, device=None, heads: int = 1):
        super().__init__()
        self.lstm = GroupedLSTM(seeds, input_size, hidden_size, num_layers, device=device)
        self.head = GroupedLinear(seeds, hidden_size, heads, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (time, seeds, batch, input) -> values (time, seeds, batch) (one head) or (time, seeds, batch,
        heads), from a zero hidden state."""
        y, _ = self.lstm(x)
        values = self.head(y)
        return values.squeeze(-1) if values.shape[-1] == 1 else values
