"""The ``hapruned`` command. Each sub-command lives in its own module, which provides
``add_parser(subparsers)`` (registering its arguments and ``func``) so the CLI is assembled here once."""

import argparse
import importlib
import sys

# sub-command name -> module providing add_parser()
COMMANDS = {
    "demo": "hapruned.experiments.demo_command",
    "baselines": "hapruned.baselines.command",
    "train": "hapruned.algos.command",
    "export": "hapruned.deploy.export_command",
    "deploy-bench": "hapruned.deploy.bench_command",
    "reproduce": "hapruned.experiments.reproduce_command",
    "sweep": "hapruned.experiments.sweep_command",
    "report": "hapruned.experiments.report_command",
    "bounds": "hapruned.experiments.bounds_command",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hapruned",
        description="Multi-agent dynamic spectrum access with harmonic-annealing pruned LSTM actors.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:  # commands that can resume say how themselves
        print(f"hapruned {args.command}: interrupted", file=sys.stderr)
        return 130
