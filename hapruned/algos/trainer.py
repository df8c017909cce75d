"""The training run: iterate, evaluate, log, checkpoint, resume.

A run directory holds

- ``config.json``: the resolved :class:`~hapruned.algos.config.TrainConfig`, written at the start;
- ``metrics.jsonl``: one JSON object per iteration (the algorithm's metrics, such as
  ``episode_reward``, ``sparsity`` per agent and, for the actor-critics, ``approx_kl``,
  ``clip_fraction``, ``entropy``, ``explained_variance``, for DQN ``loss``, ``q_mean``, ``epsilon``; plus ``iteration``, ``iteration_time_s``, ``wall_time_s``,
  ``agent_steps_per_s`` and, on evaluation iterations, ``eval_reward`` and ``eval_reward_per_seed``);
- ``checkpoint.pt``: the algorithm's complete state, the iteration and the trainer's counters,
  replaced atomically (written to a temporary file in the same directory, then renamed);
- ``summary.json``: the final evaluation reward (per seed and mean) and the per-agent sparsity.

Evaluation always replays the same held-out episodes (:func:`eval_seed`), so eval rewards are
comparable across iterations. ``resume=True`` continues from ``checkpoint.pt``; on CPU the result is
the same as an uninterrupted run (same parameters, same metrics apart from the timings).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hapruned.algos.config import TrainConfig
from hapruned.algos.dqn import RecurrentDQN
from hapruned.algos.ppo import IAGCPPO

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
SUMMARY_FILE = "summary.json"

# Evaluation environments are seeded far from any training seed, so held-out episodes never
# coincide with training ones.
EVAL_SEED_OFFSET = 1 << 40


# The learner of each ``TrainConfig.algo``; every one provides train_iteration, evaluate and its state.
LEARNERS = {"ppo": IAGCPPO, "ac": IAGCPPO, "pai": IAGCPPO, "dqn": RecurrentDQN}


class RunDirError(ValueError):
    """The run directory cannot be used as asked (not empty without resume, or a different config)."""


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the run stopped and the last good checkpoint is untouched."""


def eval_seed(seed: int) -> int:
    """The seed of the fixed held-out evaluation episodes of a run whose (first) training seed is ``seed``."""
    return EVAL_SEED_OFFSET + int(seed)


def train(
    config: TrainConfig,
    out_dir,
    resume: bool = False,
    progress: bool = True,
    checkpoint_every: int = 25,
) -> dict:
    """Train ``config`` into ``out_dir`` and return the summary (also written to ``summary.json``).

    ``out_dir`` must be missing or empty unless ``resume`` is True; with ``resume`` the run continues
    from its last checkpoint (or starts when the directory holds none) and the config must equal the
    one the run started with; otherwise :class:`RunDirError`. ``checkpoint_every``: iterations
    between checkpoints (one is always written at the end). ``progress``: show a tqdm bar on stderr.

    Raises :class:`TrainingDiverged` when a loss turns NaN/inf; ``checkpoint.pt`` then still holds
    the last good state.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
    check_device(config.device)
    out = Path(out_dir)
    resolved = config_dict(config)

    algo = LEARNERS[config.algo](config)
    trainer_state = {"wall_time_s": 0.0, "agent_steps": 0, "last_eval": None}
    start = 0
    checkpoint = out / CHECKPOINT_FILE
    if resume and (out / CONFIG_FILE).exists():
        _check_same_config(json.loads((out / CONFIG_FILE).read_text()), resolved, out)
        if checkpoint.exists():
            # our own file, written by _save_checkpoint: it holds numpy RNG states, hence weights_only=False
            saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
            algo.load_state_dict(saved["algo"])
            torch.set_rng_state(saved["torch_rng"])
            trainer_state = saved["trainer"]
            start = saved["iteration"]
        _truncate_metrics(out / METRICS_FILE, start)
    else:
        if out.exists() and any(out.iterdir()):
            hint = (
                f"it holds no {CONFIG_FILE}, so it is not a run directory"
                if resume
                else "pass resume=True (--resume) to continue that run"
            )
            raise RunDirError(f"out_dir {str(out)!r} is not empty; {hint}, or choose a new directory")
        out.mkdir(parents=True, exist_ok=True)
        _write_atomic(out / CONFIG_FILE, json.dumps(resolved, indent=2) + "\n")
        (out / METRICS_FILE).write_text("")

    seeds = config.seed_list
    held_out = eval_seed(seeds[0])
    clock_start, time_before = time.perf_counter(), trainer_state["wall_time_s"]
    bar = tqdm(total=config.iterations, initial=start, file=sys.stderr, disable=not progress, desc="train", unit="it")
    with bar, open(out / METRICS_FILE, "a") as metrics_file:
        for iteration in range(start + 1, config.iterations + 1):
            tic = time.perf_counter()
            try:
                metrics = algo.train_iteration(iteration)
            except FloatingPointError as err:
                saved_at = f"iteration {start}" if checkpoint.exists() else "none written yet"
                raise TrainingDiverged(
                    f"training diverged at iteration {iteration}: {err}. The last good checkpoint "
                    f"({saved_at}) in {str(out)!r} is intact; resuming it repeats the same computation, "
                    f"so start a new run with changed settings (e.g. lower learning rates)."
                ) from err
            elapsed = time.perf_counter() - tic
            trainer_state["agent_steps"] += int(metrics["agent_steps"])
            record = {"iteration": iteration, **metrics}
            record["iteration_time_s"] = elapsed  # rollout + update + prune
            record["agent_steps_per_s"] = metrics["agent_steps"] / elapsed if elapsed > 0 else math.inf

            if iteration % config.eval_every == 0 or iteration == config.iterations:
                per_seed = [float(r) for r in algo.evaluate(config.eval_episodes, held_out)]
                trainer_state["last_eval"] = per_seed
                record["eval_reward"] = float(np.mean(per_seed))
                record["eval_reward_per_seed"] = per_seed
            # the whole run's time so far, evaluations and checkpoints included, across resumes
            trainer_state["wall_time_s"] = time_before + time.perf_counter() - clock_start
            record["wall_time_s"] = trainer_state["wall_time_s"]
            metrics_file.write(json.dumps(record, default=_to_json) + "\n")
            metrics_file.flush()

            if iteration % checkpoint_every == 0 or iteration == config.iterations:
                _save_checkpoint(checkpoint, {
                    "iteration": iteration,
                    "algo": algo.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "trainer": trainer_state,
                    "config": resolved,
                })
                start = iteration
            bar.update(1)
            bar.set_postfix(_postfix(record, trainer_state["last_eval"]), refresh=False)

    per_seed = trainer_state["last_eval"]  # the final iteration always evaluates
    last = _last_record(out / METRICS_FILE)
    summary = {
        "final_eval_reward": float(np.mean(per_seed)),
        "final_eval_reward_per_seed": per_seed,
        "seeds": list(seeds),
        "sparsity_per_agent": _to_json(last.get("sparsity")) if last else None,
        "iterations": config.iterations,
        "eval_episodes": config.eval_episodes,
        "eval_seed": held_out,
        "agent_steps": trainer_state["agent_steps"],
        "wall_time_s": trainer_state["wall_time_s"],
        "out_dir": str(out),
    }
    _write_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2, default=_to_json) + "\n")
    return summary


def config_dict(config: TrainConfig) -> dict:
    """The config as plain JSON values (tuples become lists), as written to ``config.json``."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=_to_json))


def check_device(device: str) -> None:
    """Refuse a CUDA device when torch sees no GPU, before any work is done."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} but torch sees no CUDA GPU (torch {torch.__version__}, "
            f"built with CUDA {torch.version.cuda}); use device='cpu'"
        )


def load_config(out_dir) -> TrainConfig:
    """The config a run directory was started with (its ``config.json``)."""
    return TrainConfig(**json.loads((Path(out_dir) / CONFIG_FILE).read_text()))


def load_metrics(out_dir) -> list[dict]:
    """The records of ``metrics.jsonl`` in a run directory, in order."""
    with open(Path(out_dir) / METRICS_FILE) as f:
        return [json.loads(line) for line in f if line.strip()]


def _check_same_config(saved: dict, current: dict, out: Path) -> None:
    differing = sorted(key for key in saved.keys() | current.keys() if saved.get(key) != current.get(key))
    if differing:
        details = "; ".join(f"{key}: run has {saved.get(key)!r}, given {current.get(key)!r}" for key in differing)
        raise RunDirError(
            f"cannot resume {str(out)!r} with a different config (differing fields: {', '.join(differing)}). "
            f"{details}"
        )


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Drop the records written after the checkpoint, so the resumed run rewrites them."""
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    kept = [line for line in lines if line.strip() and json.loads(line)["iteration"] <= iteration]
    _write_atomic(path, "".join(kept))


def _last_record(path: Path) -> dict | None:
    records = load_metrics(path.parent)
    return records[-1] if records else None


def _save_checkpoint(path: Path, payload: dict) -> None:
    _replace_atomically(path, lambda f: torch.save(payload, f), binary=True)


def _write_atomic(path: Path, text: str) -> None:
    _replace_atomically(path, lambda f: f.write(text), binary=False)


def _replace_atomically(path: Path, write, binary: bool) -> None:
    """write(file) into a temporary file in the same directory, then rename it over ``path``: a crash
    mid-write leaves the previous file whole and no stray file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _to_json(value):
    """json.dumps fallback for numpy scalars/arrays and tensors."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_to_json(v) for v in value]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _postfix(record: dict, last_eval) -> dict:
    sparsity = record.get("sparsity")
    return {
        "reward": f"{float(record['episode_reward']):.1f}",
        "eval": "-" if last_eval is None else f"{float(np.mean(last_eval)):.1f}",
        "sparsity": "-" if sparsity is None else f"{float(np.mean(_to_json(sparsity))):.3f}",
        "steps/s": f"{record['agent_steps_per_s']:.0f}",
    }
