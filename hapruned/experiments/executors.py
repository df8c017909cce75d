"""Running a list of runs: one run in a worker (:func:`execute`), and the executors that spread them
over the cores of this machine (:class:`LocalExecutor`) or a Ray cluster (:class:`RayExecutor`).

Every run resumes what its directory holds, so an interrupted grid continues where it stopped.
A run that fails leaves ``error.txt`` (the traceback) in its directory and the others go on.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

import hapruned
from hapruned.experiments.grid import ERROR_FILE, Run

RAY_INSTALL = 'pip install "hapruned[ray]"'


def execute(run: Run, threads: int) -> dict:
    """Train (or, for a scheme, evaluate) ``run`` into its directory with ``threads`` torch and numba
    threads. Never raises an ``Exception``: a failure is returned, its traceback in ``error.txt``."""
    import hapruned
    import hapruned.env  # noqa: F401  (numba's pool must exist before it is sized)

    hapruned.set_num_threads(threads)
    start = time.perf_counter()
    try:
        (run.path / ERROR_FILE).unlink(missing_ok=True)
        summary = evaluate_scheme(run) if run.scheme is not None else _train(run)
        return {"key": run.key, "status": "done", "summary": summary, "seconds": time.perf_counter() - start}
    except Exception as err:  # noqa: BLE001  (any failure of one run is reported, the grid goes on)
        run.path.mkdir(parents=True, exist_ok=True)
        (run.path / ERROR_FILE).write_text(traceback.format_exc())
        return {"key": run.key, "status": "failed", "error": f"{type(err).__name__}: {err}",
                "seconds": time.perf_counter() - start}


def _train(run: Run) -> dict:
    from hapruned.algos.trainer import train

    return train(run.config, run.path, resume=True, progress=False)


def evaluate_scheme(run: Run) -> dict:
    """Play the scheme on the run's held-out episodes: the ``eval_episodes`` episodes whose streams are
    ``seed_states(eval_seed(seed), eval_episodes)``, as the trainer's evaluation of that seed plays."""
    from hapruned.algos.trainer import CONFIG_FILE, SUMMARY_FILE, write_atomic, eval_seed
    from hapruned.baselines import SCHEMES, held_out_rewards

    run.path.mkdir(parents=True, exist_ok=True)
    write_atomic(run.path / CONFIG_FILE, json.dumps(run.identity(), indent=2) + "\n")
    start = time.perf_counter()
    episodes = run.config.eval_episodes
    rewards = held_out_rewards(SCHEMES[run.scheme](), run.config.env_config, episodes, eval_seed(run.seed))
    summary = {
        "final_eval_reward": float(rewards.mean()),
        "final_eval_reward_per_seed": [float(rewards.mean())],
        "seeds": [run.seed],
        "sparsity_per_agent": None,
        "eval_episodes": episodes,
        "eval_seed": eval_seed(run.seed),
        "wall_time_s": time.perf_counter() - start,
        "out_dir": str(run.path),
    }
    write_atomic(run.path / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary


class LocalExecutor:
    """``jobs`` runs at a time in spawned processes (fork is unsafe with torch), ``threads`` threads
    each; ``jobs == 1`` runs in this process."""

    def __init__(self, jobs: int, threads: int):
        self.jobs, self.threads = jobs, threads

    def describe(self) -> str:
        return f"{self.jobs} job(s) x {self.threads} thread(s) on this machine"

    def session(self):
        """Nothing to start or join: the workers live in :meth:`map`."""
        return contextlib.nullcontext()

    def map(self, runs):
        """Yield each run's outcome (see :func:`execute`) as it finishes; on KeyboardInterrupt the
        workers are stopped before it propagates."""
        if self.jobs == 1:
            for run in runs:
                yield execute(run, self.threads)
            return
        # the environment is read when a worker starts (OpenMP, numba); set_num_threads covers the rest
        with _environ(OMP_NUM_THREADS=str(self.threads), NUMBA_NUM_THREADS=str(self.threads)):
            pool = ProcessPoolExecutor(self.jobs, mp_context=get_context("spawn"), initializer=_init_worker,
                                       initargs=(os.getpid(),))
            futures = {pool.submit(execute, run, self.threads): run for run in runs}
        try:
            for future in as_completed(futures):
                try:
                    yield future.result()
                except Exception as err:  # noqa: BLE001  (a worker died: its run failed, not the grid)
                    yield {"key": futures[future].key, "status": "failed", "error": f"{type(err).__name__}: {err}"}
        except BaseException:
            # Ctrl-C (or the consumer stopped): kill the workers now; checkpoints are replaced
            # atomically, so every run resumes from its last one
            for process in list(pool._processes.values()):
                process.terminate()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class RayConnectionError(RuntimeError):
    """Ray could not be started, or its cluster not joined; the message is one line with the likely cause."""


# Ray >= 2.52 can require a token from every client: `ray start --head` turns it on (2.60: when a token
# exists, e.g. the ~/.ray/auth_token that a local ray.init() writes), but a client that names the
# cluster's address only sends one with RAY_AUTH_MODE=token set.
RAY_AUTH_HINT = ("if the cluster uses token authentication, set RAY_AUTH_MODE=token and the cluster's token "
                 "(RAY_AUTH_TOKEN, or its file in RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token; `ray get-auth-token` "
                 "on the head prints it) in this shell and on every node")


def ray_address_parts(address: str):
    """``"HOST:PORT"`` or ``"ray://HOST:PORT"`` -> (host, port); ``"auto"`` -> None (Ray finds the cluster
    started on this machine); ValueError otherwise."""
    if address == "auto":
        return None
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")  # an IPv6 host is written [::1]:6379
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"--ray-address must be HOST:PORT (e.g. 10.0.0.1:6379), ray://HOST:PORT or auto, got {address!r}")
    return host, int(port)


class RayExecutor:
    """Ray core tasks, one per run, each asking ``num_cpus = threads``; ``jobs`` caps the runs in
    flight (None: as many as the cluster's CPUs take).

    Without ``address`` a new local Ray instance is started (``jobs * threads`` CPUs, or all cores),
    whatever Ray cluster this machine runs; with one, that cluster is joined. A Ray instance already
    started in this process is used as it is. Run directories are written by the workers themselves, so
    the output directory must be on storage every node mounts at the same path.
    """

    def __init__(self, address=None, jobs=None, threads: int = 1):
        self.ray = import_ray()
        self.address, self.jobs, self.threads = address, jobs, threads

    def describe(self) -> str:
        return f"Ray tasks of {self.threads} CPU(s) on {self.where}"

    @property
    def where(self) -> str:
        return f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"

    @contextlib.contextmanager
    def session(self):
        """Ray for the ``with`` block: the cluster joined or the local instance started (and shut down at
        the end), or the Ray this process already runs. RayConnectionError (one line) when Ray cannot be
        reached or started; ValueError when no node has ``threads`` CPUs, so no task could ever start."""
        ray = self.ray
        started_here = not ray.is_initialized()
        if started_here:
            self._init()
        try:
            largest = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")), default=0)
            if self.threads > largest:
                raise ValueError(f"--threads {self.threads}: each run asks for that many CPUs, but the largest node "
                                 f"of {self.where} has {largest:g}")
            yield
        finally:
            if started_here:
                ray.shutdown()

    def _init(self) -> None:
        ray = self.ray
        if self.address:
            parts = ray_address_parts(self.address)
            if parts is not None:
                # Ray retries an address where nothing answers for ever; a plain connection says so at once
                try:
                    socket.create_connection(parts, timeout=10).close()
                except OSError as err:
                    raise RayConnectionError(
                        f"cannot reach the Ray cluster at {self.address}: {err.strerror or err}; is `ray start "
                        f"--head --port {parts[1]}` running there, and the port open to this machine?") from None
        try:
            ray.init(**self._init_kwargs())
        except Exception as err:  # noqa: BLE001  (Ray raises many kinds; each becomes one line)
            reason = f"{type(err).__name__}: {_first_line(getattr(err, 'message', None) or err)}"
            if not self.address:
                raise RayConnectionError(f"cannot start a local Ray instance ({reason})") from None
            raise RayConnectionError(f"cannot connect to the Ray cluster at {self.address} ({reason}); "
                                     f"{RAY_AUTH_HINT}") from None

    def map(self, runs):
        ray = self.ray
        with self.session():
            task = ray.remote(execute).options(num_cpus=self.threads, max_retries=0)
            queue, pending = list(runs), {}
            try:
                while queue or pending:
                    while queue and (self.jobs is None or len(pending) < self.jobs):
                        run = queue.pop(0)
                        pending[task.remote(run, self.threads)] = run
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    run = pending.pop(ready[0])
                    try:
                        yield ray.get(ready[0])
                    except Exception as err:  # noqa: BLE001  (a worker died or the task was lost)
                        yield {"key": run.key, "status": "failed", "error": f"{type(err).__name__}: {err}"}
            except BaseException:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise

    def _init_kwargs(self) -> dict:
        if self.address:
            return {"address": self.address}
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # the workers import the same hapruned as this process (a source checkout may not be installed)
        root = str(Path(__file__).resolve().parents[2])
        pythonpath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        return {
            # "local": a new instance, even where `ray start` runs a cluster that ray.init() would join
            "address": "local",
            "num_cpus": self.jobs * self.threads if self.jobs else hapruned.available_cores(),
            "include_dashboard": False,
            "runtime_env": {"env_vars": {"PYTHONPATH": pythonpath}},
        }


def import_ray():
    try:
        import ray
    except ImportError as err:
        raise ImportError(f"the Ray executor needs the ray package; install it with: {RAY_INSTALL}") from err
    return ray


def run_all(runs: list[Run], executor, log=print) -> list[dict]:
    """Run ``runs`` on ``executor`` with a progress bar and one ``log`` line per finished run; returns
    the outcomes. A run reported done whose ``summary.json`` this machine cannot see counts as failed."""
    from hapruned.algos.trainer import SUMMARY_FILE

    by_key = {run.key: run for run in runs}
    outcomes = []
    bar = tqdm(total=len(runs), desc="runs", unit="run", file=sys.stderr, disable=None)
    # closing(): on Ctrl-C the executor stops its workers before the interrupt reaches the caller
    with bar, contextlib.closing(executor.map(runs)) as finished:
        for outcome in finished:
            run = by_key[outcome["key"]]
            if outcome["status"] == "done" and not (run.path / SUMMARY_FILE).exists():
                outcome = {**outcome, "status": "failed", "error": (
                    f"the run finished but {run.path / SUMMARY_FILE} is not visible on this machine: the output "
                    "directory must be on storage every Ray node mounts at the same path")}
            outcomes.append(outcome)
            bar.update(1)
            with bar.external_write_mode():
                log(describe_outcome(run, outcome))
    return outcomes


def describe_outcome(run: Run, outcome: dict) -> str:
    seconds = outcome.get("seconds")
    took = "" if seconds is None else f" ({seconds:.1f} s)"
    if outcome["status"] != "done":
        return f"FAILED {run.key}{took}: {outcome['error']} (directory {run.path})"
    summary = outcome["summary"]
    sparsity = summary.get("sparsity_per_agent")
    sparse = "" if not sparsity else f", sparsity {sum(sparsity) / len(sparsity):.3f}"
    return f"done {run.key}: eval reward {summary['final_eval_reward']:.1f}{sparse}{took}"


def _first_line(text) -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else ""


def _init_worker(parent: int) -> None:
    """Workers die with their parent, and leave Ctrl-C to it, which stops them (no traceback from every
    worker). tqdm's default lock is a named semaphore that a stopped worker would leave behind (and the
    resource tracker warn about); a worker has no other process to share a progress bar with."""
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tqdm.set_lock(threading.RLock())


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with(parent: int) -> None:
    """Have Linux kill this process when ``parent`` exits: a parent killed outright (SIGKILL, the OOM
    killer) cannot stop its workers, which would go on training into the grid's run directories, beside
    the workers of a rerun. The multiprocessing resource tracker then exits by itself, when the last
    process that holds its pipe is gone. Linux sends the signal when the thread that started the worker
    ends: the pool's caller, which waits for the workers. Elsewhere (no prctl) the workers finish their run."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


@contextlib.contextmanager
def _environ(**values):
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
