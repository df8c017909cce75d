"""``hapruned train``: train IAGC-PPO actors with a sparsity schedule (or a baseline ``--algo``) into a
run directory.

Every :class:`~hapruned.algos.config.TrainConfig` field has a flag (generated, so each is described
once); the chosen ``--preset`` supplies the values of the flags not given.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import numpy as np

from hapruned.algos.config import PRESETS, TrainConfig
from hapruned.config_cli import add_dataclass_arguments, dataclass_from_args, flag_names
from hapruned.env import DSAConfig
from hapruned.validation import check_integer


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train pruned LSTM actors with IAGC-PPO (or a baseline algorithm)",
        description="Train N independent LSTM actors and a global critic with PPO, pruning the actors "
        "under a sparsity schedule (--algo ppo), or one of the paper's learned baselines: plain IAGC "
        "actor-critic (ac), recurrent DQN with parameter sharing (dqn), PaI with parameter sharing (pai). "
        "Writes config.json, metrics.jsonl, checkpoint.pt and summary.json to --out.",
    )
    run = parser.add_argument_group("run")
    run.add_argument("--out", required=True, metavar="DIR", help="run directory (must be empty unless --resume)")
    run.add_argument("--preset", default="paper", choices=sorted(PRESETS),
                     help="values of the flags not given for a new run: paper (as published), fast (a workstation "
                     "budget) or paper-budget (hapruned's choices within the paper's 1000 episodes) (default: paper); "
                     "a resumed run keeps its own config")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint, with its config")
    run.add_argument("--checkpoint-every", type=int, default=25, metavar="N",
                     help="iterations between checkpoints; one is always written at the end (default: 25)")
    run.add_argument("--threads", type=int, default=None, metavar="N",
                     help="threads of this run, at most the cores it may use (default: those cores, at most one per agent and seed); "
                     "for several runs at once give each its share, e.g. --threads 1 each on a 2-core machine")
    run.add_argument("--json", action="store_true", help="print the summary as JSON on stdout, no progress bar")
    run.add_argument("--tensorboard", nargs="?", const="", default=None, metavar="DIR",
                     help="also write every metric of every iteration as TensorBoard scalars to DIR (default: "
                     "OUT/tensorboard); needs pip install \"hapruned[tensorboard]\"")
    add_dataclass_arguments(parser, TrainConfig, presets=PRESETS)
    parser.set_defaults(func=functools.partial(run_train, parser=parser))
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The base config with every flag the user gave replaced (ValueError on a bad value).

    The base is the ``--preset``, or with ``--resume`` the config the run in ``--out`` started with,
    so that ``hapruned train --out DIR --resume`` needs no other flag.
    """
    from hapruned.algos.trainer import CONFIG_FILE, load_config

    if args.resume and (Path(args.out) / CONFIG_FILE).exists():
        return dataclass_from_args(load_config(args.out), args)
    algo = {"algo": args.algo} if args.algo is not None else {}
    return dataclass_from_args(TrainConfig.preset(args.preset, **algo), args)


def run_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    # imported here so that `hapruned --help` stays quick
    import hapruned
    from hapruned.algos.tensorboard_sink import TensorBoardSink
    from hapruned.algos.trainer import (RunDirError, TrainingDiverged, TrainingInterrupted, check_device, train,
                                        training_memory)
    from hapruned.resources import check_memory

    try:
        config = config_from_args(args)
        check_device(config.device)
        check_memory(training_memory(config))
        check_integer(args.checkpoint_every, "--checkpoint-every", 1)
        if args.threads is not None:
            hapruned.check_threads(args.threads, "--threads")
        log_dir = args.tensorboard or Path(args.out) / "tensorboard"
        sink = None if args.tensorboard is None else TensorBoardSink(log_dir, config)
    except ValueError as err:
        parser.error(flag_names(str(err), TrainConfig, DSAConfig))
    except ImportError as err:
        parser.error(f"--tensorboard: {err}")
    # the ops' parallel work: one group per agent of each seed (DQN: one per seed)
    groups = len(config.seed_list) * (1 if config.algo == "dqn" else config.n_users)
    hapruned.set_num_threads(args.threads or min(hapruned.available_cores(), groups))
    try:
        summary = train(config, args.out, resume=args.resume, progress=not args.json,
                        checkpoint_every=args.checkpoint_every, on_record=sink)
    except RunDirError as err:
        parser.error(str(err))
    except TrainingDiverged as err:
        print(f"hapruned train: error: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as err:
        print(f"hapruned train: {err}", file=sys.stderr)
        return 130
    except OSError as err:  # e.g. the disk filled up or the directory became read-only mid-run
        print(f"hapruned train: error: {err.strerror or err}: {err.filename or args.out}", file=sys.stderr)
        return 1
    finally:
        if sink is not None:
            sink.close()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        per_seed = ", ".join(f"seed {s}: {r:.1f}" for s, r in zip(summary["seeds"], summary["final_eval_reward_per_seed"]))
        sparsity = summary["sparsity_per_agent"]
        mean_sparsity = "n/a" if sparsity is None else f"{float(np.mean(sparsity)):.4f}"
        print(f"final eval reward {summary['final_eval_reward']:.1f} ({per_seed}); "
              f"mean actor sparsity {mean_sparsity}; run in {summary['out_dir']}")
    return 0
