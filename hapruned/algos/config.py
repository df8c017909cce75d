"""Configuration of an IAGC-PPO training run (paper Section III; decisions in DESIGN.md §2-§3).

One frozen dataclass holds every knob; the ``hapruned train`` flags are generated from it
(``hapruned.config_cli``), and ``TrainConfig.preset`` gives the published budget (``paper``) or the
workstation budget (``fast``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from hapruned.env import DSAConfig

ALGOS = ("ppo", "ac", "dqn", "pai")
METHODS = ("dense", "harmonic", "linear", "polynomial", "cosine", "constant")
PRUNE_MODES = ("regrow", "masked")
CRITIC_INPUTS = ("own", "joint")
SETUPS = ("A", "B")


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0-4"`` -> (0, 1, 2, 3, 4); ``"1,5,7"`` -> (1, 5, 7); ranges and lists may be mixed."""
    seeds = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        seeds.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    return tuple(seeds)


def parse_floats(text: str) -> tuple[float, ...]:
    """``"0.9,0.95"`` -> (0.9, 0.95)."""
    return tuple(float(part) for part in text.split(","))


def _is_int(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of one training run; several ``seeds`` train side by side as extra groups.

    ``algo`` picks the learning algorithm; a field an algorithm does not use must keep its default
    (``TrainConfig.preset(name, algo=...)`` gives each algorithm's own defaults).
    """

    algo: str = field(default="ppo", metadata={"help": "learning algorithm: ppo (IAGC-PPO) | ac (plain IAGC actor-critic) | "
                                                        "dqn (recurrent DQN, one Q-network shared by all agents) | "
                                                        "pai (PPO, one actor shared under fixed random per-agent masks)"})
    # environment
    setup: str = field(default="A", metadata={"help": "paper setup: A (no primary users) or B (each channel busy w.p. 0.2)"})
    n_users: int = field(default=10, metadata={"help": "number of users (agents) N, >= 1"})
    n_channels: int = field(default=5, metadata={"help": "number of channels K, >= 1"})
    horizon: int = field(default=100, metadata={"help": "slots per episode T, >= 1"})
    # pruning
    method: str = field(default="harmonic", metadata={"help": "sparsity schedule of the actors: " + " | ".join(METHODS)})
    sparsity: float = field(default=0.95, metadata={"help": "final actor sparsity p_final in [0, 1) (ignored by dense; pai: its fixed masks' sparsity)"})
    agent_sparsity: Optional[tuple[float, ...]] = field(
        default=None,
        metadata={"help": "per-agent final sparsities, N comma-separated values (overrides --sparsity)", "parse": parse_floats},
    )
    i_start: int = field(default=0, metadata={"help": "iteration at which pruning starts, >= 0"})
    i_end: Optional[int] = field(default=None, metadata={"help": "iteration i_P at which the target is reached (default: the last)", "parse": int})
    i_prune: int = field(default=5, metadata={"help": "iterations between prune events, >= 1"})
    p0: float = field(default=0.0, metadata={"help": "initial sparsity p0 of the harmonic and cosine schedules"})
    amplitude: float = field(default=0.1, metadata={"help": "amplitude A of the harmonic schedule's oscillation"})
    period: Optional[int] = field(
        default=None,
        metadata={"help": "period P (iterations) of the harmonic oscillation (default: iterations / 5, the paper's 200 at 1000)", "parse": int},
    )
    prune_mode: str = field(default="regrow", metadata={"help": "regrow (paper: pruned weights keep training) | masked"})
    per_matrix: bool = field(default=False, metadata={"help": "one magnitude threshold per weight matrix instead of per agent"})
    # budget and seeds
    iterations: int = field(default=1000, metadata={"help": "training iterations I_T, >= 1"})
    envs_per_iteration: int = field(default=1, metadata={"help": "episodes sampled per iteration (parallel environments), >= 1"})
    seed: int = field(default=0, metadata={"help": "random seed (networks, sampling, environments), >= 0"})
    seeds: Optional[tuple[int, ...]] = field(
        default=None,
        metadata={"help": "several seeds trained together as extra groups, e.g. 0-4 or 0,3,7 (overrides --seed)", "parse": parse_seeds},
    )
    # networks
    hidden_size: int = field(default=128, metadata={"help": "LSTM hidden units per layer (actors and critic)"})
    num_layers: int = field(default=2, metadata={"help": "LSTM layers (actors and critic)"})
    critic_input: str = field(default="own", metadata={"help": "critic reads each agent's own observation (own, paper) | the joint one (joint)"})
    # PPO
    actor_lr: float = field(default=1e-4, metadata={"help": "Adam learning rate of the actors"})
    critic_lr: float = field(default=5e-5, metadata={"help": "Adam learning rate of the critic"})
    gamma: float = field(default=0.99, metadata={"help": "discount factor in [0, 1]"})
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE lambda in [0, 1]"})
    clip: float = field(default=0.2, metadata={"help": "PPO clip range epsilon, > 0"})
    epochs: int = field(default=4, metadata={"help": "PPO epochs over each iteration's episodes, >= 1"})
    minibatches: int = field(default=1, metadata={"help": "minibatches per epoch, split by environment (divides envs_per_iteration)"})
    entropy_coef: float = field(default=0.01, metadata={"help": "weight of the entropy bonus, >= 0"})
    max_grad_norm: float = field(default=0.5, metadata={"help": "gradient-norm clip per agent (and per critic), > 0; 0 disables"})
    normalize_rewards: bool = field(default=True, metadata={"help": "scale rewards by a running std of the discounted return"})
    normalize_advantages: bool = field(default=True, metadata={"help": "standardise advantages per minibatch and agent"})
    # DQN
    replay_capacity: int = field(default=1000, metadata={"help": "dqn: episodes the replay buffer holds per seed, >= 1"})
    replay_batch: int = field(default=4, metadata={"help": "dqn: episodes per sequence update (their N agents' sequences each), >= 1"})
    updates_per_iteration: int = field(default=8, metadata={"help": "dqn: gradient updates per iteration, >= 1"})
    target_update: int = field(default=100, metadata={"help": "dqn: updates between hard copies of the online network into the target, >= 1"})
    target_tau: float = field(default=0.0, metadata={"help": "dqn: Polyak rate of the target network after every update, in [0, 1]; 0 = hard copies"})
    epsilon_start: float = field(default=1.0, metadata={"help": "dqn: exploration rate at the first iteration, in [0, 1]"})
    epsilon_end: float = field(default=0.05, metadata={"help": "dqn: exploration rate after the decay, in [0, 1]"})
    epsilon_decay: float = field(default=0.5, metadata={"help": "dqn: fraction of the iterations over which epsilon falls linearly, in (0, 1]"})
    eval_epsilon: float = field(default=0.05, metadata={"help": "dqn: exploration rate of evaluations, in [0, 1] (--eval-greedy: 0)"})
    # evaluation and hardware
    eval_every: int = field(default=10, metadata={"help": "iterations between evaluations, >= 1"})
    eval_episodes: int = field(default=100, metadata={"help": "held-out episodes per evaluation, >= 1"})
    eval_greedy: bool = field(default=False, metadata={"help": "evaluate the most likely action instead of sampling the policy"})
    device: str = field(default="cpu", metadata={"help": "torch device: cpu | cuda | cuda:N"})

    def __post_init__(self):
        def fail(name, allowed, value):
            raise ValueError(f"TrainConfig.{name} must be {allowed}, got {value!r}")

        for name, allowed in (("algo", ALGOS), ("setup", SETUPS), ("method", METHODS), ("prune_mode", PRUNE_MODES),
                              ("critic_input", CRITIC_INPUTS)):
            if getattr(self, name) not in allowed:
                fail(name, "one of " + ", ".join(allowed), getattr(self, name))
        positive_ints = ("n_users", "n_channels", "horizon", "i_prune", "iterations", "envs_per_iteration",
                         "hidden_size", "num_layers", "epochs", "minibatches", "eval_every", "eval_episodes",
                         "replay_capacity", "replay_batch", "updates_per_iteration", "target_update")
        for name in positive_ints:
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                fail(name, "an integer >= 1", getattr(self, name))
        if self.period is not None and (not _is_int(self.period) or self.period < 1):
            fail("period", "None or an integer >= 1", self.period)
        for name in ("i_start", "seed"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                fail(name, "an integer >= 0", getattr(self, name))
        if self.i_end is not None and (not _is_int(self.i_end) or not self.i_start < self.i_end <= self.iterations):
            fail("i_end", f"None or an integer in (i_start={self.i_start}, iterations={self.iterations}]", self.i_end)
        if self.i_end is None and self.method != "dense" and self.i_start >= self.iterations:
            fail("i_start", f"smaller than iterations={self.iterations} when pruning", self.i_start)
        if self.envs_per_iteration % self.minibatches:
            fail("minibatches", f"a divisor of envs_per_iteration={self.envs_per_iteration}", self.minibatches)
        if not 0.0 <= self.sparsity < 1.0:
            fail("sparsity", "a float in [0, 1)", self.sparsity)
        if self.agent_sparsity is not None:
            values = tuple(float(p) for p in self.agent_sparsity)
            if len(values) != self.n_users or not all(0.0 <= p < 1.0 for p in values):
                fail("agent_sparsity", f"None or n_users={self.n_users} floats in [0, 1)", self.agent_sparsity)
            object.__setattr__(self, "agent_sparsity", values)
        if not 0.0 <= self.p0 < 1.0:
            fail("p0", "a float in [0, 1)", self.p0)
        if not 0.0 <= self.amplitude <= 1.0:
            fail("amplitude", "a float in [0, 1]", self.amplitude)
        if self.seeds is not None:
            seeds = tuple(self.seeds)
            if not seeds or not all(_is_int(s) and s >= 0 for s in seeds) or len(set(seeds)) != len(seeds):
                fail("seeds", "None or distinct integers >= 0", self.seeds)
            object.__setattr__(self, "seeds", tuple(int(s) for s in seeds))
        for name in ("actor_lr", "critic_lr", "clip"):
            if not getattr(self, name) > 0:
                fail(name, "a number > 0", getattr(self, name))
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                fail(name, "a number in [0, 1]", getattr(self, name))
        for name in ("entropy_coef", "max_grad_norm"):
            if not getattr(self, name) >= 0:
                fail(name, "a number >= 0", getattr(self, name))
        for name in ("target_tau", "epsilon_start", "epsilon_end", "eval_epsilon"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                fail(name, "a number in [0, 1]", getattr(self, name))
        if not 0.0 < self.epsilon_decay <= 1.0:
            fail("epsilon_decay", "a number in (0, 1]", self.epsilon_decay)
        # the fields this algorithm does not use keep their defaults, so no setting is silently ignored
        for name in UNUSED_FIELDS[self.algo]:
            if getattr(self, name) != _DEFAULTS[name]:
                fail(name, f"left at its default {_DEFAULTS[name]!r} with algo {self.algo!r}, which does not use it",
                     getattr(self, name))
        if self.algo == "dqn" and self.replay_capacity < self.envs_per_iteration:
            fail("replay_capacity", f">= envs_per_iteration={self.envs_per_iteration} (one iteration's episodes)",
                 self.replay_capacity)
        for name, value in REQUIRED_VALUES.get(self.algo, {}).items():
            if getattr(self, name) != value:
                fail(name, f"{value!r} with algo {self.algo!r} ({ALGO_NOTES[self.algo]})", getattr(self, name))
        if not (self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")):
            fail("device", "cpu, cuda or cuda:N", self.device)

    # derived values, computed in one place
    @property
    def seed_list(self) -> tuple[int, ...]:
        """The training seeds: ``seeds`` if given, else ``(seed,)``."""
        return self.seeds if self.seeds is not None else (self.seed,)

    @property
    def env_config(self) -> DSAConfig:
        return DSAConfig.setup(self.setup, n_users=self.n_users, n_channels=self.n_channels, horizon=self.horizon)

    @property
    def schedule_period(self) -> float:
        """The harmonic oscillation period: ``period``, or ``iterations / 5`` so that any run length
        sees the five cycles of the paper's Fig. 1 and ends on a zero of the sine."""
        return self.period if self.period is not None else self.iterations / 5

    @property
    def agent_targets(self) -> tuple[float, ...]:
        """Final sparsity of each agent (all zero for dense)."""
        if self.method == "dense":
            return (0.0,) * self.n_users
        return self.agent_sparsity if self.agent_sparsity is not None else (self.sparsity,) * self.n_users

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **overrides) -> "TrainConfig":
        """``paper``: one episode per iteration, 1000 iterations, as published. ``fast``: a workstation
        budget, 16 episodes per iteration for 200 iterations with 8 larger Adam steps per iteration
        (2 epochs x 4 minibatches of whole episodes), a critic that reads the joint observation and
        ``masked`` pruning (pruned weights stay pruned, so a prune event costs no reward), which
        learns in fewer iterations than ``paper`` and on every seed we tried.

        With ``algo`` among the overrides, the preset's values of fields that algorithm does not use
        are dropped and the algorithm's own defaults (``ALGO_DEFAULTS``, ``ALGO_PRESETS``) applied."""
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {name!r}")
        algo = overrides.get("algo", "ppo")
        if algo not in ALGOS:
            raise ValueError(f"algo must be one of {', '.join(ALGOS)}, got {algo!r}")
        values = {key: value for key, value in PRESETS[name].items() if key not in UNUSED_FIELDS[algo]}
        values.update(ALGO_DEFAULTS.get(algo, {}))
        values.update(ALGO_PRESETS.get((name, algo), {}))
        return cls(**{**values, **overrides})


PRESETS = {
    "paper": {"iterations": 1000, "envs_per_iteration": 1, "epochs": 4, "minibatches": 1},
    "fast": {"iterations": 200, "envs_per_iteration": 16, "epochs": 2, "minibatches": 4, "actor_lr": 1e-3,
             "critic_lr": 1e-3, "entropy_coef": 0.003, "critic_input": "joint", "prune_mode": "masked"},
}

_PRUNING_FIELDS = ("sparsity", "agent_sparsity", "i_start", "i_end", "i_prune", "p0", "amplitude", "period",
                   "prune_mode", "per_matrix")
_SCHEDULE_FIELDS = _PRUNING_FIELDS[2:]
_CRITIC_FIELDS = ("critic_input", "critic_lr", "gae_lambda", "entropy_coef", "normalize_advantages")
_DQN_FIELDS = ("replay_capacity", "replay_batch", "updates_per_iteration", "target_update", "target_tau",
               "epsilon_start", "epsilon_end", "epsilon_decay", "eval_epsilon")
# Fields each algorithm does not read; they must keep their defaults.
UNUSED_FIELDS = {
    "ppo": _DQN_FIELDS,
    "ac": _DQN_FIELDS + ("clip",),
    "dqn": _PRUNING_FIELDS + _CRITIC_FIELDS + ("clip", "epochs", "minibatches"),
    "pai": _DQN_FIELDS + _SCHEDULE_FIELDS,
}
# Values an algorithm needs, and why.
REQUIRED_VALUES = {
    "ac": {"epochs": 1, "minibatches": 1},
    "dqn": {"method": "dense"},
    "pai": {"method": "constant"},
}
ALGO_NOTES = {
    "ac": "one gradient step per iteration's episodes",
    "dqn": "it has no pruning",
    "pai": "its masks are fixed at initialisation; --sparsity sets them",
}
# Defaults of each algorithm in every preset, then per (preset, algorithm).
ALGO_DEFAULTS = {
    "ac": {"method": "dense", "epochs": 1, "minibatches": 1},
    "dqn": {"method": "dense"},
    "pai": {"method": "constant", "sparsity": 0.5},
}
ALGO_PRESETS = {
    ("paper", "dqn"): {"updates_per_iteration": 2},
}
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
