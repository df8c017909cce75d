"""The grid of runs behind the paper's Table I and figures: methods (table rows), budgets and runs.

A run is one seed of one method in one setup, in its own run directory
``DIR/runs/SETUP/METHOD/seed-S``. Learned methods train there with
:func:`hapruned.algos.trainer.train`; the non-learning schemes are evaluated there on exactly the
held-out episodes the learned runs of the same seed are evaluated on, and write the same
``config.json`` and ``summary.json`` files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hapruned.algos.config import SETUPS, TrainConfig
from hapruned.algos.trainer import (CONFIG_FILE, SUMMARY_FILE, RunDirError, check_same_config, config_dict, eval_seed,
                                    read_config_file, write_atomic)
from hapruned.env.rng import MAX_SEED
from hapruned.validation import MAX_INTEGER, is_integer, is_number

RUNS_DIR = "runs"
MANIFEST_FILE = "experiment.json"
ERROR_FILE = "error.txt"


@dataclass(frozen=True)
class Budget:
    """A training budget: a ``TrainConfig`` preset, overrides on top of it, and the default seeds."""

    preset: str
    overrides: dict = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    description: str = ""

    def config(self, **overrides) -> TrainConfig:
        return TrainConfig.preset(self.preset, **{**self.overrides, **overrides})


BUDGETS = {
    "paper": Budget("paper", seeds=tuple(range(10)),
                    description="the published protocol: 1000 iterations of 1 episode, eval every 10 over 100 episodes"),
    "fast": Budget("fast", seeds=tuple(range(5)),
                   description="the fast preset: 200 iterations of 16 episodes, eval every 10 over 100 episodes"),
    "paper-budget": Budget("paper-budget", seeds=tuple(range(5)),
                           description="hapruned's choices within the paper's 1000 episodes: 250 iterations of 4, "
                                       "eval every 10 over 100 episodes"),
    # proves the pipeline end to end in a minute or two on 2 cores; it does not learn. It changes only
    # fields that every algorithm reads (an algorithm refuses settings of fields it does not use).
    "smoke": Budget("fast", {"iterations": 4, "envs_per_iteration": 4, "eval_every": 2, "eval_episodes": 8},
                    seeds=(0, 1), description="a pipeline check: 4 iterations of 4 episodes, eval every 2 over 8 episodes"),
}


@dataclass(frozen=True)
class Method:
    """One row of Table I: a non-learning ``scheme``, or ``TrainConfig`` overrides of a learned method.

    ``i_start_fraction`` starts pruning at that fraction of the budget's iterations (the paper's
    ``i_start = 200`` of 1000). ``paper``: the paper's Table I value (best seed) in setups A and B.
    """

    name: str
    label: str
    scheme: Optional[str] = None
    overrides: dict = field(default_factory=dict)
    i_start_fraction: Optional[float] = None
    paper: Optional[tuple[float, float]] = None

    def config(self, budget: Budget, setup: str, seed: int) -> TrainConfig:
        if self.scheme is not None:  # the schemes need the budget's environment and evaluation only
            return budget.config(setup=setup, seed=seed)
        overrides = dict(self.overrides)
        if self.i_start_fraction is not None:
            overrides["i_start"] = round(self.i_start_fraction * budget.config().iterations)
        return budget.config(**overrides, setup=setup, seed=seed)


# In Table I's order, then hapruned's own rows. The pruned PPO rows other than the two harmonic ones
# use the budget's prune mode (fast: masked, paper: regrow); the table names each row's mode.
METHODS = {m.name: m for m in (
    Method("aloha", "slotted Aloha", scheme="aloha", paper=(993.77, 764.10)),
    Method("oca", "OCA", scheme="oca", paper=(1023.45, 811.52)),
    Method("sticky", "sticky access", scheme="sticky"),
    Method("oracle", "oracle (upper bound)", scheme="oracle"),
    Method("ac", "IAGC", overrides={"algo": "ac"}, paper=(996.11, 802.24)),
    Method("dqn", "DQN, parameter sharing", overrides={"algo": "dqn"}, paper=(742.54, 555.41)),
    Method("pai", "PaI (50%)", overrides={"algo": "pai", "sparsity": 0.5}, paper=(1111.88, 825.34)),
    Method("dense", "dense IAGC-PPO", overrides={"method": "dense"}, paper=(1556.83, 1115.74)),
    Method("harmonic-regrow", "harmonic annealing", overrides={"method": "harmonic", "prune_mode": "regrow"},
           paper=(1826.86, 1223.41)),
    Method("harmonic-masked", "harmonic annealing", overrides={"method": "harmonic", "prune_mode": "masked"},
           paper=(1826.86, 1223.41)),
    Method("linear", "linear", overrides={"method": "linear"}, paper=(1194.82, 1083.76)),
    Method("polynomial", "polynomial", overrides={"method": "polynomial", "i_start": 0}, paper=(1412.89, 1092.19)),
    Method("polynomial-200", "polynomial (i_start = I_T/5)", overrides={"method": "polynomial"},
           i_start_fraction=0.2, paper=(1496.46, 1048.51)),
    Method("cosine", "cosine (harmonic, A = 0)", overrides={"method": "cosine"}),
)}
BASELINE_LEVELS = ("aloha", "sticky", "oracle")  # the horizontal lines of Fig. 2


@dataclass(frozen=True)
class Run:
    """One run directory: ``key`` is its path under ``DIR/runs``; ``scheme`` names a non-learning
    scheme to evaluate, else ``config`` is trained."""

    key: str
    path: Path
    seed: int
    config: TrainConfig
    scheme: Optional[str] = None

    def identity(self) -> dict:
        """What ``config.json`` holds: the whole training config, or for a scheme what its result depends on."""
        if self.scheme is None:
            return config_dict(self.config)
        return {"scheme": self.scheme, "env": self.config.env_config.to_dict(), "eval_episodes": self.config.eval_episodes,
                "eval_seed": eval_seed(self.seed)}

    def status(self) -> str:
        return run_status(self.path)

    def check_config(self) -> None:
        """RunDirError if the directory was started with another configuration (e.g. another budget)."""
        if (self.path / CONFIG_FILE).exists():
            check_same_config(read_config_file(self.path), self.identity(), self.path)


def run_status(path: Path) -> str:
    """``done`` (summary.json), ``failed`` (error.txt), ``started`` (interrupted) or ``new``."""
    if (path / SUMMARY_FILE).exists():
        return "done"
    if (path / ERROR_FILE).exists():
        return "failed"
    return "started" if (path / CONFIG_FILE).exists() else "new"


def run_key(*parts) -> str:
    """``run_key("A", "linear", 3)`` -> ``"A/linear/seed-3"``, the run's path under ``DIR/runs``."""
    return "/".join(str(p) for p in parts[:-1]) + f"/seed-{parts[-1]}"


def reproduce_runs(out_dir, budget: Budget, setups, methods, seeds) -> list[Run]:
    """The runs of ``methods``, ordered seed by seed so that an interrupted grid has whole seeds of
    every row (schemes first: they take seconds)."""
    out = Path(out_dir).resolve()
    chosen = sorted((METHODS[name] for name in methods), key=lambda m: m.scheme is None)
    runs = []
    for seed in seeds:
        for setup in setups:
            for method in chosen:
                key = run_key(setup, method.name, seed)
                runs.append(Run(key, out / RUNS_DIR / key, seed, method.config(budget, setup, seed), method.scheme))
    return runs


def parse_names(text: str, allowed, what: str) -> list[str]:
    """``"a,b"`` -> ["a", "b"], each checked against ``allowed`` (ValueError naming them all)."""
    names = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise ValueError(f"unknown {what} {', '.join(unknown) or repr(text)}; choose from {', '.join(allowed)}")
    return names


def write_manifest(out_dir, manifest: dict) -> None:
    """What the last reproduce or sweep call asked for; ``hapruned report`` rebuilds its outputs from it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")


def read_manifest(out_dir) -> dict:
    """The manifest of a reproduce or sweep directory; RunDirError if it has none or it is damaged (each
    field is checked, so that no damaged value names a path outside ``DIR/runs``)."""
    path = Path(out_dir) / MANIFEST_FILE
    if not path.exists():
        raise RunDirError(f"{str(out_dir)!r} holds no {MANIFEST_FILE}: it is not a reproduce or sweep directory")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RunDirError(f"{str(path)!r} is damaged (not JSON); run the reproduce or sweep command again") from None
    if not isinstance(manifest, dict) or manifest.get("command") not in ("reproduce", "sweep"):
        raise RunDirError(f"{str(path)!r} is not a reproduce or sweep manifest; run that command again")
    try:
        _check_manifest(manifest)
    except (TypeError, ValueError) as err:
        raise RunDirError(f"{str(path)!r} is damaged ({err}); run the reproduce or sweep command again") from None
    return manifest


def _check_manifest(manifest: dict) -> None:
    """ValueError (or TypeError) naming the first field of ``manifest`` that the reports cannot use."""
    from hapruned.experiments.sweep import check_grid

    seeds = manifest.get("seeds")
    if (not isinstance(seeds, list) or not seeds or len(set(map(repr, seeds))) != len(seeds)
            or not all(is_integer(s) and 0 <= s <= MAX_SEED for s in seeds)):
        raise ValueError(f"seeds must be a list of distinct seeds, got {seeds!r}")
    if not isinstance(manifest.get("budget"), str):
        raise ValueError(f"budget must be a budget's name, got {manifest.get('budget')!r}")
    if manifest["command"] == "sweep":
        check_grid(manifest)
        return
    for key, allowed in (("setups", SETUPS), ("methods", METHODS)):
        names = manifest.get(key)
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n in allowed for n in names):
            raise ValueError(f"{key} must be a list of names among {', '.join(allowed)}, got {names!r}")


# What each value of summary.json that the experiments read must be.
SUMMARY_VALUES = {
    "final_eval_reward": is_number,
    "sparsity_per_agent": lambda v: v is None or isinstance(v, list) and all(is_number(p) and 0 <= p <= 1 for p in v),
    "final_eval_reward_per_seed": lambda v: isinstance(v, list) and len(v) > 0 and all(map(is_number, v)),
    "wall_time_s": lambda v: is_number(v) and v >= 0,
    "eval_episodes": lambda v: is_integer(v) and v >= 1,
    "eval_seed": lambda v: is_integer(v) and 0 <= v <= MAX_INTEGER,
}


def read_summary(run_dir, keys=("final_eval_reward", "sparsity_per_agent")) -> dict:
    """A finished run's ``summary.json``; RunDirError naming the file if it is damaged: not a JSON object,
    or one of ``keys`` (those the caller reads, see ``SUMMARY_VALUES``) missing or out of range."""
    path = Path(run_dir) / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text())
        if not isinstance(summary, dict):
            raise ValueError("not a JSON object")
        for key in keys:
            if not SUMMARY_VALUES[key](summary.get(key)):
                raise ValueError(f"{key} is {summary.get(key)!r}")
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise RunDirError(f"{str(path)!r} is damaged ({err}); delete its run directory and run the "
                          f"command that made it again") from None
    return summary
