"""``hapruned report``: rebuild the outputs of a reproduce or sweep directory without training."""

from __future__ import annotations

import argparse
import functools


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report",
        help="rebuild the table, figures and report.json of a reproduce or sweep directory",
        description="Read the run directories under DIR/runs (finished runs; failed and unfinished ones "
        "are listed) and rewrite the outputs of the last `hapruned reproduce` or `hapruned sweep` "
        "call into DIR; prints the table. No training.",
    )
    parser.add_argument("dir", metavar="DIR", help="the --out directory of hapruned reproduce or sweep")
    parser.set_defaults(func=functools.partial(run_report, parser=parser))
    return parser


def run_report(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from hapruned.algos.trainer import RunDirError
    from hapruned.experiments.report import print_report, write_report

    try:
        report = write_report(args.dir)
    except RunDirError as err:
        parser.error(f"DIR: {err}")
    except OSError as err:  # e.g. DIR is read-only, or a run's file is a directory
        parser.error(f"DIR: {err.strerror or err}: {err.filename or args.dir}")
    print_report(report)
    return 0
