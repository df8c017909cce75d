"""hapruned: multi-agent actor-critic with harmonic-annealing pruning for dynamic spectrum access.

Sub-packages: ``env`` (batched DSA simulator), ``ops`` (fused masked-LSTM and prune-mask ops),
``nn`` (grouped LSTM modules), ``pruning`` (sparsity schedules and the pruner), ``algos``
(IAGC-PPO), ``baselines`` (classic access schemes and the oracle bound), ``deploy`` (exported
sparse actors; its NumPy path runs without torch, so importing ``hapruned`` itself imports neither
torch nor numba).
"""

import os
import sys

# torch's OpenMP runtime (libgomp) lets an idle thread spin for GOMP_SPINCOUNT checks (300000 by default,
# milliseconds) before it sleeps. On a machine that other processes share, those spins take the cores
# the other processes, and this process's other threads, are waiting for: two trainings side by side
# each ran 13x slower than alone. 2000 checks is about 50 us, as long as the compiled ops' helpers spin.
# libgomp reads the variable once, when torch loads it, so it is set here, before hapruned loads torch:
# it takes effect for the command line and for programs that import hapruned first; a value already in
# the environment is kept.
if "torch" not in sys.modules:
    os.environ.setdefault("GOMP_SPINCOUNT", "2000")

__version__ = "0.1.0"
__all__ = ["HAS_EXTENSION", "available_cores", "check_threads", "set_num_threads", "__version__"]


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask, which taskset and container cpusets set)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_threads(value, name: str) -> int:
    """``value`` as an int, or ValueError naming ``name`` unless it is a thread count in [1, available_cores()].

    More threads than cores only make them wait for each other, and a count in the thousands makes
    the thread pools fail to start their threads (a crash, not an exception)."""
    from hapruned.validation import is_integer

    cores = available_cores()
    if not is_integer(value) or not 1 <= value <= cores:
        raise ValueError(f"{name} must be an integer in [1, {cores}] (the cores this process may use), got {value!r}")
    return int(value)


def __getattr__(name: str):
    # HAS_EXTENSION loads torch and the compiled extension, on first use only.
    if name == "HAS_EXTENSION":
        from hapruned._extension import HAS_EXTENSION

        return HAS_EXTENSION
    raise AttributeError(f"module 'hapruned' has no attribute {name!r}")


def set_num_threads(n: int) -> None:
    """Set the thread count of everything hapruned runs in parallel: torch's intra-op threads (which
    also size the compiled ops' work-sharing pool) and numba's.

    Call it once, after both are imported (importing ``hapruned.env`` imports numba).
    """
    import numba
    import torch

    n = check_threads(n, "n")
    # numba first: its first call starts numba's OpenMP pool, which sets the shared OpenMP thread count
    # back to the core count once torch has used OpenMP, undoing an earlier torch.set_num_threads.
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(n)
