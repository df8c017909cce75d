"""The ``hapruned`` command. Each sub-command lives in its own module, which provides
``add_parser(subparsers)`` (registering its arguments and ``func``) so the CLI is assembled here once."""

import argparse
import importlib
import sys

# sub-command name -> module providing add_parser()
COMMANDS = {
    "baselines": "hapruned.baselines.command",
    "train": "hapruned.algos.command",
    "export": "hapruned.deploy.export_command",
    "deploy-bench": "hapruned.deploy.bench_command",
    "reproduce": "hapruned.experiments.reproduce_command",
    "sweep": "hapruned.experiments.sweep_command",
    "report": "hapruned.experiments.report_command",
    "bounds": "hapruned.experiments.bounds_command",
}


class Parser(argparse.ArgumentParser):
    """An argument parser whose refusals are one line, ``PROG: error: MESSAGE``, then where the help is,
    instead of argparse's usage of every flag first. Sub-command parsers are of this class too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="hapruned",
        description="Multi-agent dynamic spectrum access with harmonic-annealing pruned LSTM actors.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv=None) -> int:
    command = "hapruned"
    try:
        # Ctrl-C may come while the commands' modules are imported, before any command runs
        args = build_parser().parse_args(argv)
        command += f" {args.command}"
        return args.func(args) or 0
    except KeyboardInterrupt:  # commands that can resume say how themselves
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
