"""Fused grouped ops: ``masked_lstm_cell``, ``masked_lstm`` (a whole sequence), ``magnitude_prune_mask``,
``sparse_lstm`` / ``sparse_lstm_cell`` / ``sparse_linear`` (weights read and trained at the entries of a
compressed layout, ``sparse_layout``) and ``sparse_lstm_step`` (inference with CSR weights), with their
pure-PyTorch reference twins.

The ops run the compiled kernels of ``hapruned._C`` where the build has them for the device, and
the reference twins everywhere else (see ``hapruned.ops.library``). ``set_cpu_isa`` chooses the
instruction set of the CPU kernels.
"""

from hapruned.ops.library import (
    CPU_ISAS,
    cpu_isa,
    magnitude_prune_mask,
    masked_lstm,
    masked_lstm_cell,
    set_cpu_isa,
    sparse_layout,
    sparse_linear,
    sparse_lstm,
    sparse_lstm_cell,
    sparse_lstm_step,
    supported_cpu_isas,
)
from hapruned.ops.reference import (
    layout_pattern,
    prune_counts,
    reference_magnitude_prune_mask,
    reference_masked_lstm,
    reference_masked_lstm_cell,
    reference_sparse_linear,
    reference_sparse_lstm,
    reference_sparse_lstm_cell,
    reference_sparse_lstm_step,
)

__all__ = [
    "CPU_ISAS",
    "cpu_isa",
    "layout_pattern",
    "magnitude_prune_mask",
    "masked_lstm",
    "masked_lstm_cell",
    "prune_counts",
    "reference_magnitude_prune_mask",
    "reference_masked_lstm",
    "reference_masked_lstm_cell",
    "reference_sparse_linear",
    "reference_sparse_lstm",
    "reference_sparse_lstm_cell",
    "reference_sparse_lstm_step",
    "set_cpu_isa",
    "sparse_layout",
    "sparse_linear",
    "sparse_lstm",
    "sparse_lstm_cell",
    "sparse_lstm_step",
    "supported_cpu_isas",
]
