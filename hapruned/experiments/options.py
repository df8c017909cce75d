"""What ``hapruned reproduce`` and ``hapruned sweep`` share: the budget, seed and executor flags, and
running a grid of runs into ``--out`` and writing its report."""

from __future__ import annotations

import argparse
import contextlib
import sys

from hapruned.algos.config import parse_seeds
from hapruned.experiments.grid import BUDGETS, write_manifest
from hapruned.env.rng import MAX_SEED
from hapruned.validation import check_integer

EXECUTORS = ("local", "ray")


def add_grid_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output directory: run directories under DIR/runs, the report beside them; "
                        "running the same command again skips finished runs and resumes interrupted ones")
    parser.add_argument("--budget", default="fast", choices=list(BUDGETS),
                        help="; ".join(f"{name}: {b.description}, seeds {b.seeds[0]}-{b.seeds[-1]}"
                                       for name, b in BUDGETS.items()) + " (default: fast)")
    parser.add_argument("--seeds", type=parse_seeds, default=None, metavar="SEEDS",
                        help="seeds, one run each, e.g. 0-4 or 0,3,7 (default: the budget's)")
    run = parser.add_argument_group("execution")
    run.add_argument("--executor", default="local", choices=EXECUTORS,
                     help="local: a process pool on this machine; ray: Ray tasks, `pip install \"hapruned[ray]\"` (default: local)")
    run.add_argument("--jobs", type=int, default=None, metavar="N",
                     help="runs at a time (default: local, the number of cores; ray, as many as the cluster's CPUs take); "
                     "on this machine jobs x threads is at most its cores")
    run.add_argument("--threads", type=int, default=None, metavar="N",
                     help="torch and numba threads per run (default: local, cores // jobs; ray, 1); "
                     "each Ray task asks for that many CPUs, at most a node's")
    run.add_argument("--ray-address", default=None, metavar="ADDR",
                     help="with --executor ray: join the Ray cluster at ADDR (HOST:PORT, e.g. 10.0.0.1:6379, or auto for "
                     "the one `ray start` runs on this machine) instead of starting a local Ray instance; DIR must be "
                     "on storage every node mounts at the same path; a cluster with token authentication also needs "
                     "RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN or ~/.ray/auth_token) here")


def seeds_from_args(args, parser) -> tuple[int, ...]:
    seeds = args.seeds if args.seeds is not None else BUDGETS[args.budget].seeds
    try:
        for seed in seeds:
            check_integer(seed, "--seeds", 0, MAX_SEED)
    except ValueError as err:
        parser.error(str(err))
    if len(set(seeds)) != len(seeds):
        parser.error(f"--seeds must be distinct, got {seeds}")
    return seeds


def executor_from_args(args, parser):
    """The executor the flags ask for; parser.error (exit 2) on bad values or a missing ``ray``."""
    from hapruned import available_cores, check_threads
    from hapruned.experiments.executors import LocalExecutor, RayExecutor, ray_address_parts

    if args.ray_address is not None and args.executor != "ray":
        parser.error("--ray-address needs --executor ray")
    cluster = args.executor == "ray" and args.ray_address is not None
    try:
        for flag in ("jobs", "threads"):
            if getattr(args, flag) is not None:
                # a cluster's nodes have their own cores (its threads are checked against them once joined)
                if cluster:
                    check_integer(getattr(args, flag), f"--{flag}", 1)
                else:
                    check_threads(getattr(args, flag), f"--{flag}")
        if cluster:
            ray_address_parts(args.ray_address)
    except ValueError as err:
        parser.error(str(err))
    cores = available_cores()
    if not cluster and args.jobs is not None and args.threads is not None and args.jobs * args.threads > cores:
        parser.error(f"--jobs {args.jobs} x --threads {args.threads} exceeds the {cores} cores of this machine")
    if args.executor == "ray":
        try:
            return RayExecutor(args.ray_address, args.jobs, args.threads or 1)
        except ImportError as err:
            parser.error(f"--executor ray: {err}")
    jobs = args.jobs or max(1, cores // (args.threads or 1))
    threads = args.threads or max(1, cores // jobs)
    return LocalExecutor(jobs, threads)


def run_grid(runs, manifest: dict, args, parser) -> int:
    """Start or join the executor, take the lock of ``--out`` and check every run directory against its
    config (before anything is written), record ``manifest``, run what is not finished, write the
    report and print its table. Returns the exit status: 0; 1 when a run failed, or Ray or a file could
    not be used; 130 on Ctrl-C."""
    from hapruned.algos.trainer import RunDirError, lock_run_dir
    from hapruned.experiments.executors import RayConnectionError, run_all
    from hapruned.experiments.report import print_report, write_report

    executor = executor_from_args(args, parser)
    error = f"hapruned {args.command}: error:"
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(executor.session())
        except RayConnectionError as err:
            print(f"{error} {err}", file=sys.stderr)
            return 1
        except ValueError as err:  # no node of the cluster can run a task of --threads CPUs
            parser.error(str(err))
        try:
            stack.enter_context(lock_run_dir(args.out, "output directory"))  # one command at a time writes into --out
            for run in runs:
                run.check_config()
        except RunDirError as err:
            parser.error(f"--out {args.out}: {err}")
        try:
            write_manifest(args.out, manifest)
        except OSError as err:
            parser.error(f"--out {args.out}: cannot write there ({err.strerror or err})")
        status = [run.status() for run in runs]
        todo = [run for run, s in zip(runs, status) if s != "done"]
        resumed = sum(s in ("started", "failed") for s in status)
        print(f"{len(runs)} runs: {len(runs) - len(todo)} finished, {resumed} to resume or retry, "
              f"{len(todo) - resumed} to start; {executor.describe()}", flush=True)
        try:
            outcomes = run_all(todo, executor) if todo else []
            print_report(write_report(args.out))
        except KeyboardInterrupt:
            print(f"\ninterrupted: finished runs are kept in {args.out}; run the same command again to resume",
                  file=sys.stderr)
            return 130
        except RunDirError as err:  # a finished run's files are damaged
            print(f"{error} {err}", file=sys.stderr)
            return 1
        except OSError as err:  # e.g. the disk filled up or the directory became read-only
            print(f"{error} {err.strerror or err}: {err.filename or args.out}", file=sys.stderr)
            return 1
    return 1 if any(o["status"] != "done" for o in outcomes) else 0
