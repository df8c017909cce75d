"""Fused grouped ops: ``masked_lstm_cell`` and ``magnitude_prune_mask``, with their reference twins."""

from hapruned.ops.reference import (
    prune_counts,
    reference_magnitude_prune_mask,
    reference_masked_lstm_cell,
)

# Until the compiled kernels are wired in, the public ops are the references.
masked_lstm_cell = reference_masked_lstm_cell
magnitude_prune_mask = reference_magnitude_prune_mask

__all__ = [
    "magnitude_prune_mask",
    "masked_lstm_cell",
    "prune_counts",
    "reference_magnitude_prune_mask",
    "reference_masked_lstm_cell",
]
