"""``hapruned baselines``: evaluate the non-learning schemes and the oracle bound on one configuration."""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time

from hapruned.baselines import SCHEMES, SlottedAloha, decentralised_bound, evaluate
from hapruned.baselines.base import check_probability
from hapruned.config_cli import add_dataclass_arguments, dataclass_from_args, flag_names
from hapruned.env import DSAConfig
from hapruned.env.config import SETUPS
from hapruned.env.rng import MAX_SEED
from hapruned.resources import check_memory
from hapruned.validation import check_integer


def _schemes(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCHEMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scheme(s) {unknown or [text]}; choose a comma-separated subset of {','.join(SCHEMES)}"
        )
    return list(dict.fromkeys(names))


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "baselines",
        help="evaluate slotted Aloha, OCA, sticky access and the centralised oracle",
        description="Mean, std, min and max episode reward (sum over slots of the summed "
        "log2(1 + SNR) throughput) of each non-learning scheme; all schemes face the same episodes. "
        "Also prints the decentralised bound min(N, K) * E[log2(1 + SNR)] * T * (1 - pu_prob), the most "
        "a scheme that never observes the SNRs can expect.",
    )
    parser.add_argument("--setup", choices=list(SETUPS), default="A", help="paper setup: A (no primary users) or B (pu_prob 0.2)")
    parser.add_argument("--episodes", type=int, default=2000, help="episodes per scheme, >= 1 (default: 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the episodes and the schemes' randomness, >= 0 (default: 0)")
    parser.add_argument("--num-envs", type=int, default=500, help="environments stepped together, >= 1 (default: 500)")
    parser.add_argument(
        "--schemes", type=_schemes, default=list(SCHEMES), help=f"comma-separated subset of {','.join(SCHEMES)} (default: all)"
    )
    parser.add_argument("--aloha-p", type=float, default=None, help="Aloha transmit probability in (0, 1] (default: min(1, K/N))")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_dataclass_arguments(parser, DSAConfig)
    parser.set_defaults(func=functools.partial(run, parser=parser))


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        config = dataclass_from_args(DSAConfig.setup(args.setup), args)
        check_integer(args.episodes, "--episodes", 1)
        check_integer(args.num_envs, "--num-envs", 1)
        check_integer(args.seed, "--seed", 0, MAX_SEED)
        policies = {name: SCHEMES[name]() for name in args.schemes}
        if "aloha" in policies:
            aloha_p = None if args.aloha_p is None else check_probability("--aloha-p", args.aloha_p, low_open=True)
            policies["aloha"] = SlottedAloha(aloha_p)
        check_memory(baselines_memory(config, args.episodes, args.num_envs))
    except ValueError as error:
        parser.error(flag_names(str(error), DSAConfig))

    show_progress = not args.json and sys.stderr.isatty()
    results = {}
    for name, policy in policies.items():
        bar = _progress_bar(name, args.episodes) if show_progress else None
        start = time.perf_counter()
        rewards = evaluate(
            policy, config, args.episodes, args.seed, num_envs=args.num_envs, progress=bar.update if bar else None
        )
        seconds = time.perf_counter() - start
        if bar:
            bar.close()
        results[name] = {
            "mean": float(rewards.mean()),
            "std": float(rewards.std()),
            "min": float(rewards.min()),
            "max": float(rewards.max()),
            "seconds": seconds,
        }

    if args.json:
        report = {
            "setup": args.setup,
            "episodes": args.episodes,
            "seed": args.seed,
            "config": config.to_dict(),
            "schemes": results,
            "decentralised_bound": decentralised_bound(config),
        }
        print(json.dumps(report, indent=2))
    else:
        print(_table(config, args, results))
    return 0


def baselines_memory(config: DSAConfig, episodes: int, num_envs: int) -> dict[str, tuple[float, str]]:
    """Rough bytes of an evaluation's large parts (see ``hapruned.resources.check_memory``)."""
    N, K = config.n_users, config.n_channels
    batch = min(num_envs, episodes)
    return {
        # SNRs, rates, observations and the schemes' per-user state (the oracle's weights), float64
        "the environments": (8 * batch * N * (6 * K + 8), "--num-envs, --n-users and --n-channels"),
        "the episode rewards": (16 * episodes, "--episodes"),
    }


def _progress_bar(name: str, total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="ep", file=sys.stderr, leave=False)


def _table(config: DSAConfig, args, results: dict) -> str:
    lines = [
        f"setup {args.setup}: N={config.n_users} K={config.n_channels} T={config.horizon} "
        f"SNR U[{config.snr_low:g}, {config.snr_high:g}]{' observed' if config.observe_snr else ''} "
        f"pu_prob={config.pu_prob}, "
        f"{args.episodes} episodes, seed {args.seed}",
        f"{'scheme':<8} {'mean':>9} {'std':>8} {'min':>9} {'max':>9} {'seconds':>8}",
    ]
    for name, row in results.items():
        lines.append(
            f"{name:<8} {row['mean']:9.1f} {row['std']:8.1f} {row['min']:9.1f} {row['max']:9.1f} {row['seconds']:8.2f}"
        )
    lines.append(f"decentralised bound (SNRs never observed): {decentralised_bound(config):.1f}")
    return "\n".join(lines)

