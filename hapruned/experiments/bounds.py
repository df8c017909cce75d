"""Trained runs against the two bounds of their environment: the decentralised bound (what a scheme that
never observes the SNRs can expect, ``hapruned.baselines.decentralised_bound``) and the centralised
oracle played on each run's own held-out evaluation episodes. Runs that differ only in their seeds
make one row: the mean and std over all their seeds' final evaluation rewards, and the wall time per run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hapruned.algos.trainer import CONFIG_FILE, SUMMARY_FILE, RunDirError, config_dict, eval_seed, load_config
from hapruned.experiments.grid import read_summary
from hapruned.experiments.report import markdown_table
from hapruned.resources import check_memory

HEADER = ("setup", "N", "K", "SNR observed", "method", "iterations", "seeds", "mean ± std", "decentralised bound",
          "oracle", "gap to the oracle closed", "minutes per run")


def compare_runs(run_dirs, note=None) -> list[dict]:
    """One row per group of finished training runs that differ only in their seeds, in the order first met;
    RunDirError for a directory that is not a finished training run or whose files are damaged. A directory
    given twice (by any path) counts once, and ``note`` (if given) is called with a line saying so."""
    from hapruned.baselines import Oracle, decentralised_bound, held_out_rewards
    from hapruned.baselines.command import baselines_memory

    groups, seen = {}, {}
    for run_dir in map(Path, run_dirs):
        if run_dir.resolve() in seen:
            if note:
                note(f"{run_dir} is {seen[run_dir.resolve()]} again: its seeds are counted once")
            continue
        seen[run_dir.resolve()] = run_dir
        config = load_config(run_dir)
        if not (run_dir / SUMMARY_FILE).exists():
            raise RunDirError(f"{str(run_dir)!r} is not a finished run: it has no {SUMMARY_FILE}")
        summary = read_summary(run_dir, ("final_eval_reward_per_seed", "eval_episodes", "eval_seed", "wall_time_s"))
        episodes, seed = summary["eval_episodes"], summary["eval_seed"]
        if (episodes, seed) != (config.eval_episodes, eval_seed(config.seed_list[0])) or len(
                summary["final_eval_reward_per_seed"]) != len(config.seed_list):
            raise RunDirError(f"{str(run_dir / SUMMARY_FILE)!r} does not belong to the run of {CONFIG_FILE} (its "
                              f"evaluation episodes, seed or number of seeds differ); delete the run and train it again")
        check_memory({"the oracle on the run's evaluation episodes":
                      (sum(size for size, _ in baselines_memory(config.env_config, episodes, episodes).values()),
                       f"the run's eval_episodes ({episodes})")})
        # the oracle on the episodes the run's seeds were evaluated on (as hapruned reproduce plays the schemes)
        oracle = held_out_rewards(Oracle(), config.env_config, episodes, seed).mean()
        key = json.dumps({k: v for k, v in config_dict(config).items() if k not in ("seed", "seeds")}, sort_keys=True)
        group = groups.setdefault(key, {"config": config, "rewards": [], "oracle": [], "minutes": [], "runs": []})
        group["rewards"] += summary["final_eval_reward_per_seed"]
        group["oracle"].append(oracle)
        group["minutes"].append(summary["wall_time_s"] / 60)
        group["runs"].append(str(run_dir))
    rows = []
    for group in groups.values():
        config, rewards = group["config"], np.array(group["rewards"])
        bound, oracle = decentralised_bound(config.env_config), float(np.mean(group["oracle"]))
        mean = float(rewards.mean())
        rows.append({
            "setup": config.setup, "n_users": config.n_users, "n_channels": config.n_channels,
            "observe_snr": config.observe_snr, "algo": config.algo, "method": config.method,
            "iterations": config.iterations, "seeds": len(rewards), "mean": mean,
            "std": float(rewards.std(ddof=1)) if len(rewards) > 1 else None,
            "decentralised_bound": bound, "oracle": oracle,
            "gap_closed": (mean - bound) / (oracle - bound) if oracle != bound else None,
            "minutes_per_run": float(np.mean(group["minutes"])), "runs": group["runs"],
        })
    return rows


def bounds_table(rows: list[dict]) -> str:
    """The rows of :func:`compare_runs` as a Markdown table."""
    cells = [
        (row["setup"], row["n_users"], row["n_channels"], "yes" if row["observe_snr"] else "no",
         row["method"] if row["algo"] == "ppo" else row["algo"], row["iterations"], row["seeds"],
         f"{row['mean']:.1f}" + ("" if row["std"] is None else f" ± {row['std']:.1f}"),
         f"{row['decentralised_bound']:.1f}", f"{row['oracle']:.1f}",
         "—" if row['gap_closed'] is None else f"{100 * row['gap_closed']:.0f}%", f"{row['minutes_per_run']:.1f}")
        for row in rows
    ]
    return markdown_table(HEADER, cells)
