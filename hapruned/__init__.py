"""hapruned: multi-agent actor-critic with harmonic-annealing pruning for dynamic spectrum access.

Sub-packages: ``env`` (batched DSA simulator), ``ops`` (fused masked-LSTM and prune-mask ops),
``nn`` (grouped LSTM modules), ``pruning`` (sparsity schedules and the pruner), ``algos``
(IAGC-PPO), ``baselines`` (classic access schemes and the oracle bound), ``deploy`` (exported
sparse actors; its NumPy path runs without torch, so importing ``hapruned`` itself imports neither
torch nor numba).
"""

__version__ = "0.1.0"
__all__ = ["HAS_EXTENSION", "set_num_threads", "__version__"]


def __getattr__(name: str):
    # HAS_EXTENSION loads torch and the compiled extension, on first use only.
    if name == "HAS_EXTENSION":
        from hapruned._extension import HAS_EXTENSION

        return HAS_EXTENSION
    raise AttributeError(f"module 'hapruned' has no attribute {name!r}")


def set_num_threads(n: int) -> None:
    """Set the thread count of both pools hapruned uses: torch's intra-op pool and numba's.

    Call it once, after both are imported (importing ``hapruned.env`` imports numba).
    """
    import numba
    import torch

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
