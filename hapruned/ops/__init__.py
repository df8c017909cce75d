"""Fused grouped ops: ``masked_lstm_cell``, ``masked_lstm`` (a whole sequence) and
``magnitude_prune_mask``, with their pure-PyTorch reference twins.

The ops run the compiled kernels of ``hapruned._C`` where the build has them for the device, and
the reference twins everywhere else (see ``hapruned.ops.library``).
"""

from hapruned.ops.library import magnitude_prune_mask, masked_lstm, masked_lstm_cell
from hapruned.ops.reference import (
    prune_counts,
    reference_magnitude_prune_mask,
    reference_masked_lstm,
    reference_masked_lstm_cell,
)

__all__ = [
    "magnitude_prune_mask",
    "masked_lstm",
    "masked_lstm_cell",
    "prune_counts",
    "reference_magnitude_prune_mask",
    "reference_masked_lstm",
    "reference_masked_lstm_cell",
]
