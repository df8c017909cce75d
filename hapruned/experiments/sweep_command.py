"""``hapruned sweep``: a sensitivity study over any TrainConfig fields."""

from __future__ import annotations

import argparse
import functools

from hapruned.experiments.options import add_grid_arguments, run_grid, seeds_from_args


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "sweep",
        help="train every point of a grid over training settings and tabulate and plot the rewards",
        description="Train one run per grid point and seed under DIR/runs (every other setting from "
        "--budget), then write DIR/sweep.md and sweep.csv (mean ± std, 95% CI per grid point), "
        "sweep_FIELD.png per swept field and report.json.",
        epilog="example: hapruned sweep --out runs/sens --grid i_prune=1,5,10 amplitude=0,0.05,0.1 period=50,100,200",
    )
    add_grid_arguments(parser)
    parser.add_argument("--grid", nargs="+", action="extend", required=True, metavar="FIELD=V1,V2",
                        help="a TrainConfig field (as in `hapruned train --help`, with _ or -) and its values; "
                        "several fields make a full grid; setup=A,B sweeps both setups; none for a default of None; "
                        "a per-channel pu_prob or per-agent agent_sparsity list is one value with / between its "
                        "entries, e.g. pu_prob=0.1/0.3,0.2 (directories name it 0.1_0.3); every point is checked "
                        "before any run starts")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="FIELD=V",
                        help="a field's value for every point (e.g. eval_every=100), as --grid with one value")
    parser.add_argument("--one-at-a-time", action="store_true",
                        help="an ablation: a base point (the budget's values), then each --grid value alone, every "
                        "other field at its base value, instead of every combination")
    parser.set_defaults(func=functools.partial(run_sweep, parser=parser))
    return parser


def run_sweep(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from hapruned.experiments.grid import BUDGETS
    from hapruned.experiments.sweep import parse_grid, sweep_runs

    seeds = seeds_from_args(args, parser)
    try:
        grid = parse_grid(args.grid)
        fixed = {name: values[0] for name, values in parse_grid(args.set, "--set").items()} if args.set else {}
        if fixed.keys() & grid.keys():
            raise ValueError(f"--set {', '.join(sorted(fixed.keys() & grid.keys()))}: also in --grid")
        runs = sweep_runs(args.out, BUDGETS[args.budget], grid, seeds, fixed, args.one_at_a_time)
    except ValueError as err:
        parser.error(str(err))
    manifest = {"command": "sweep", "budget": args.budget, "grid": grid, "seeds": list(seeds), "fixed": fixed,
                "one_at_a_time": args.one_at_a_time}
    return run_grid(runs, manifest, args, parser)
