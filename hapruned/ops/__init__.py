"""Fused grouped ops: ``masked_lstm_cell``, ``masked_lstm`` (a whole sequence),
``magnitude_prune_mask`` and ``sparse_lstm_step`` (inference with CSR weights), with their
pure-PyTorch reference twins.

The ops run the compiled kernels of ``hapruned._C`` where the build has them for the device, and
the reference twins everywhere else (see ``hapruned.ops.library``).
"""

from hapruned.ops.library import magnitude_prune_mask, masked_lstm, masked_lstm_cell, sparse_lstm_step
from hapruned.ops.reference import (
    prune_counts,
    reference_magnitude_prune_mask,
    reference_masked_lstm,
    reference_masked_lstm_cell,
    reference_sparse_lstm_step,
)

__all__ = [
    "magnitude_prune_mask",
    "masked_lstm",
    "masked_lstm_cell",
    "prune_counts",
    "reference_magnitude_prune_mask",
    "reference_masked_lstm",
    "reference_masked_lstm_cell",
    "reference_sparse_lstm_step",
    "sparse_lstm_step",
]
