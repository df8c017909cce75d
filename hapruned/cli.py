"""The ``hapruned`` command. Each sub-command lives in its own module, which provides
``add_parser(subparsers)`` (registering its arguments and ``func``) so the CLI is assembled here once."""

import argparse
import contextlib
import ctypes
import importlib
import signal
import sys
import threading

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
    status = _run(argv)
    if status == 130:
        # An interrupt that passed through code a C extension ran with PyRun_String (pybind11's eval, in
        # torch) leaves CPython marked to kill itself with SIGINT at exit, even once handled; running any
        # statement clears the mark, so that the exit status is 130 wherever the interrupt came.
        ctypes.pythonapi.PyRun_SimpleString(b"pass")
    return status


def _run(argv) -> int:
    command = "hapruned"
    with _noting_interrupts() as interrupts:
        try:
            # Ctrl-C may come while the commands' modules are imported, before any command runs
            args = build_parser().parse_args(argv)
            command += f" {args.command}"
            return args.func(args) or 0
        except KeyboardInterrupt:  # commands that can resume say how themselves
            print(f"{command}: interrupted", file=sys.stderr)
            return 130
        except Exception:
            if not interrupts:
                raise
            # a C extension interrupted while it loads may fail with another error (numpy: an ImportError)
            print(f"{command}: interrupted", file=sys.stderr)
            return 130


@contextlib.contextmanager
def _noting_interrupts():
    """A list that gets an entry for each Ctrl-C (SIGINT) in the ``with`` block, which still raises
    KeyboardInterrupt; a SIGINT that Python does not turn into KeyboardInterrupt here (ignored, as in a
    background job, or another handler) is left alone."""
    noted = []
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler or threading.current_thread() is not threading.main_thread():
        yield noted
        return

    def note(signum, frame):
        noted.append(signum)
        previous(signum, frame)

    signal.signal(signal.SIGINT, note)
    try:
        yield noted
    finally:
        signal.signal(signal.SIGINT, previous)
