"""``hapruned reproduce``: train and evaluate the grid behind the paper's Table I, Fig. 1 and Fig. 2."""

from __future__ import annotations

import argparse
import functools

from hapruned.algos.config import SETUPS
from hapruned.experiments.grid import BUDGETS, METHODS, parse_names
from hapruned.experiments.options import add_grid_arguments, run_grid, seeds_from_args


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "reproduce",
        help="run the paper's comparison (every Table I method, both setups, several seeds) and report it",
        description="Train every learned method of the paper's Table I (and hapruned's own rows) and "
        "evaluate the non-learning schemes on the same held-out episodes, one run directory per "
        "setup, method and seed under DIR/runs; then write DIR/table1.md, table1.csv, "
        "fig1_sparsity.png, fig2_training.png and report.json.",
    )
    add_grid_arguments(parser)
    parser.add_argument("--setups", default=",".join(SETUPS), metavar="LIST",
                        help=f"comma-separated subset of {','.join(SETUPS)} (default: all)")
    parser.add_argument("--methods", default=",".join(METHODS), metavar="LIST",
                        help=f"comma-separated subset of {','.join(METHODS)} (default: all)")
    parser.set_defaults(func=functools.partial(run_reproduce, parser=parser))
    return parser


def run_reproduce(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from hapruned.experiments.grid import reproduce_runs

    try:
        setups = parse_names(args.setups, SETUPS, "--setups value")
        methods = parse_names(args.methods, METHODS, "--methods value")
    except ValueError as err:
        parser.error(str(err))
    seeds = seeds_from_args(args, parser)
    runs = reproduce_runs(args.out, BUDGETS[args.budget], setups, methods, seeds)
    manifest = {"command": "reproduce", "budget": args.budget, "setups": setups, "methods": methods, "seeds": list(seeds)}
    return run_grid(runs, manifest, args, parser)
