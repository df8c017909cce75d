"""``hapruned bounds``: trained runs against the decentralised bound and the oracle of their environment."""

from __future__ import annotations

import argparse
import functools
import json
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "bounds",
        help="compare trained runs with the decentralised bound and the oracle of their environment",
        description="For finished `hapruned train` run directories (any N, K, setup and --observe-snr): the "
        "mean ± std of the final evaluation rewards over the seeds of runs that differ only in their seed, "
        "the decentralised bound min(N, K) * E[log2(1 + SNR)] * T * (1 - pu_prob), the oracle's mean over the "
        "runs' own held-out evaluation episodes, the share of the gap between them that the runs close, and "
        "the wall time per run. No training.",
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="run directories of hapruned train (one given twice, by any path, counts once)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    parser.set_defaults(func=functools.partial(run_bounds, parser=parser))
    return parser


def run_bounds(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from hapruned.algos.trainer import RunDirError
    from hapruned.experiments.bounds import bounds_table, compare_runs
    from hapruned.resources import MemoryEstimateError

    try:
        rows = compare_runs(args.run_dirs, note=lambda line: print(f"note: {line}", file=sys.stderr))
    except (RunDirError, MemoryEstimateError, OSError) as err:
        parser.error(f"RUN_DIR: {err}")
    print(json.dumps(rows, indent=2) if args.json else bounds_table(rows))
    return 0
