"""``hapruned demo``: the main job in a few minutes. Train 95%-sparse actors on one setup with the
``paper-budget`` recipe (the paper's 1000 training episodes), export them to an ``.hpz`` file and set
their reward beside the non-learning schemes, the decentralised bound and the oracle, all played on the
run's own held-out evaluation episodes.

``--out DIR`` holds ``run/`` (an ordinary ``hapruned train`` run directory), ``actors.hpz`` and
``demo.json`` (what the command prints, as numbers).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from hapruned.algos.config import SETUPS, TrainConfig
from hapruned.env.rng import MAX_SEED

PRESET = "paper-budget"
RUN_DIR, ACTORS_FILE, DEMO_FILE = "run", "actors.hpz", "demo.json"
SCHEME_ROWS = {"aloha": "slotted Aloha", "oca": "OCA", "sticky": "sticky access"}


def recipe(setup: str, seed: int) -> TrainConfig:
    """What the demo trains: the ``paper-budget`` preset (harmonic annealing to 95% sparsity, reached at
    iteration 200 of 250, 4 episodes per iteration) on ``setup`` with ``seed``."""
    return TrainConfig.preset(PRESET, setup=setup, seed=seed)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="train a 95%%-sparse policy in a few minutes and compare it with the schemes and the bounds",
        description="Train IAGC-PPO actors pruned to 95% sparsity by harmonic annealing with the paper-budget "
        "recipe (250 iterations of 4 episodes: the paper's 1000 training episodes; 5 to 6.5 minutes "
        "of CPU time), export them to DIR/actors.hpz, and print their reward on the run's held-out evaluation "
        "episodes beside slotted Aloha, OCA and sticky access on the same episodes, the decentralised bound "
        "and the oracle: each as a share of the bound, with the actors' sparsity and the file's size. "
        "DIR/run is an ordinary `hapruned train` run directory; DIR/demo.json holds the numbers.",
    )
    parser.add_argument("--out", default="runs/demo", metavar="DIR",
                        help="where to write (default: runs/demo); it must be missing or empty unless "
                        "--resume or --force is given")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the demo in DIR from its last checkpoint (a finished one is only "
                       "reported again)")
    again.add_argument("--force", action="store_true",
                       help="delete the demo in DIR and start afresh (refused if DIR holds anything a demo "
                       "does not write)")
    parser.add_argument("--setup", choices=SETUPS, default="A",
                        help="paper setup: A (no primary users) or B (each channel busy w.p. 0.2) (default: A)")
    parser.add_argument("--seed", type=int, default=0, help="training seed, >= 0 (default: 0)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="threads (default: the cores this process may use, at most one per agent)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON, no progress bar")
    parser.set_defaults(func=functools.partial(run_demo, parser=parser))
    return parser


def run_demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import hapruned
    from hapruned.algos.trainer import RunDirError, TrainingDiverged, TrainingInterrupted, train
    from hapruned.validation import check_integer

    out = Path(args.out)
    try:
        check_integer(args.seed, "--seed", 0, MAX_SEED)
        if args.threads is not None:
            check_integer(args.threads, "--threads", 1)
        prepare_out(out, args.resume, args.force)
    except ValueError as err:
        parser.error(str(err))
    config = recipe(args.setup, args.seed)
    hapruned.set_num_threads(args.threads or min(hapruned.available_cores(), config.n_users))
    if not args.json:
        print(f"hapruned demo: setup {config.setup} (N = {config.n_users} users, K = {config.n_channels} channels, "
              f"T = {config.horizon} slots), IAGC-PPO with harmonic annealing to {config.sparsity:.0%} sparsity, "
              f"{config.iterations} iterations of {config.envs_per_iteration} episodes (--preset {PRESET}), "
              f"seed {args.seed}; writing {out}", flush=True)
    try:
        summary = train(config, out / RUN_DIR, resume=args.resume, progress=not args.json, checkpoint_every=10)
    except RunDirError as err:
        parser.error(str(err))
    except TrainingDiverged as err:
        print(f"hapruned demo: error: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted:
        print(f"hapruned demo: interrupted; continue from the last checkpoint with: "
              f"hapruned demo --out {out} --resume", file=sys.stderr)
        return 130
    if not args.json:
        print(f"playing the schemes on the run's {summary['eval_episodes']} held-out episodes", file=sys.stderr, flush=True)
    result = compare(out, config, summary)
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


def prepare_out(out: Path, resume: bool, force: bool) -> None:
    """Check that ``out`` may be written (ValueError naming --out otherwise); with ``force``, empty it."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {str(out)!r} exists and is not a directory")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not entries:
        return
    # what a demo writes, and the temporary files of its atomic writes
    foreign = [name for name in entries if name not in (RUN_DIR, ACTORS_FILE, DEMO_FILE)
               and not (name.startswith((ACTORS_FILE + ".", DEMO_FILE + ".")) and name.endswith(".tmp"))]
    if not (resume or force):
        raise ValueError(f"--out: {str(out)!r} is not empty; --resume continues the demo in it, --force deletes it "
                         f"and starts afresh, or choose another --out")
    if foreign:
        raise ValueError(f"--out: {str(out)!r} holds {foreign[0]!r}, which the demo does not write, so it is not a "
                         f"demo directory; choose another --out")
    if force:
        for name in entries:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def compare(out: Path, config: TrainConfig, summary: dict) -> dict:
    """Export the trained actors and play the schemes and the oracle on the run's held-out episodes; the
    numbers, also written to ``out/demo.json``."""
    from hapruned.algos.trainer import write_atomic
    from hapruned.baselines import SCHEMES, decentralised_bound, held_out_rewards
    from hapruned.deploy.export import run_actors, write_actors

    env, episodes, seed = config.env_config, summary["eval_episodes"], summary["eval_seed"]
    rewards = {name: float(held_out_rewards(SCHEMES[name](), env, episodes, seed).mean())
               for name in (*SCHEME_ROWS, "oracle")}
    rewards["trained"] = summary["final_eval_reward"]
    bound = decentralised_bound(env)

    metadata, actors = run_actors(out / RUN_DIR)
    hpz = out / ACTORS_FILE
    partial = hpz.with_name(hpz.name + f".{os.getpid()}.tmp")
    try:
        size = write_actors(partial, metadata, actors)
        os.replace(partial, hpz)
    finally:
        partial.unlink(missing_ok=True)
    weights = sum(m.shape[0] * m.shape[1] for a in actors for m in (*a.layers, a.head))
    result = {
        "setup": config.setup, "seed": config.seed, "preset": PRESET, "iterations": config.iterations,
        "episodes_per_iteration": config.envs_per_iteration, "eval_episodes": episodes, "eval_seed": seed,
        "rewards": rewards, "decentralised_bound": bound,
        "share_of_bound": {name: value / bound for name, value in rewards.items()},
        "sparsity_per_agent": summary["sparsity_per_agent"],
        "sparsity": float(np.mean(summary["sparsity_per_agent"])),
        "hpz": str(hpz), "hpz_bytes": size, "dense_float32_bytes": 4 * weights,
        "train_wall_time_s": summary["wall_time_s"], "run_dir": str(out / RUN_DIR),
    }
    write_atomic(out / DEMO_FILE, json.dumps(result, indent=2) + "\n")
    return result


def report(result: dict) -> str:
    """``compare``'s result as the table the command prints."""
    rewards, share = result["rewards"], result["share_of_bound"]
    rows = [(label, rewards[name], share[name]) for name, label in SCHEME_ROWS.items()]
    rows += [(f"IAGC-PPO, {result['sparsity']:.0%} sparse (this run)", rewards["trained"], share["trained"]),
             ("decentralised bound", result["decentralised_bound"], 1.0),
             ("oracle (knows every SNR)", rewards["oracle"], share["oracle"])]
    width = max(len(label) for label, _, _ in rows)
    lines = [f"setup {result['setup']}, seed {result['seed']}: mean episode reward over the run's "
             f"{result['eval_episodes']} held-out evaluation episodes (the same episodes for every row)",
             f"{'':<{width}}  {'reward':>8}  {'share of the bound':>18}"]
    lines += [f"{label:<{width}}  {value:8.1f}  {fraction:18.2%}" for label, value, fraction in rows]
    low, high = min(result["sparsity_per_agent"]), max(result["sparsity_per_agent"])
    dense = result["dense_float32_bytes"]
    per_agent = f"{low:.4f} in every agent" if low == high else f"{low:.4f} to {high:.4f} per agent"
    lines += [
        f"actors: {result['sparsity']:.2%} of their weights zero ({per_agent}); trained in "
        f"{result['train_wall_time_s']:.0f} s",
        f"exported to {result['hpz']}: {result['hpz_bytes']:,} bytes, 1/{dense / result['hpz_bytes']:.1f} of the "
        f"dense float32 weights ({dense:,} bytes)",
    ]
    return "\n".join(lines)
