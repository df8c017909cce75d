"""Float 0/1 masks against bool masks in the masked LSTM ops, N = 10 groups, H = 128, I = 9, 95% pruned.

Run: python -m pytest benchmarks/test_bench_mask_kinds.py --benchmark-group-by=group
Cases per group: ``bool`` (a bool mask: the least traffic, what any conversion of a float mask could at
best reach), ``float`` (the same mask as float32, as the op takes it) and ``float_to_bool`` (converted
to bool inside the timed call after checking it is 0/1: what the op would pay to convert a float mask
on every call, which a cache that in-place writes cannot bypass would also pay, since it has to read
the whole mask to see that it is unchanged). torch runs on one thread.
"""

import pytest
import torch

from hapruned import ops

GROUPS, HIDDEN, INPUT, SPARSITY = 10, 128, 9, 0.95
KINDS = ["bool", "float", "float_to_bool"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _to_bool(mask: torch.Tensor) -> torch.Tensor:
    return mask != 0 if bool(((mask == 0) | (mask == 1)).all()) else mask


def _call(op, kind, batch, steps=None):
    gen = torch.Generator().manual_seed(0)
    x_shape = (GROUPS, batch, INPUT) if steps is None else (steps, GROUPS, batch, INPUT)
    shapes = [x_shape, (GROUPS, batch, HIDDEN), (GROUPS, batch, HIDDEN), (GROUPS, 4 * HIDDEN, INPUT),
              (GROUPS, 4 * HIDDEN, HIDDEN), (GROUPS, 4 * HIDDEN)]
    tensors = [0.3 * torch.randn(shape, generator=gen) for shape in shapes]
    masks = [ops.magnitude_prune_mask(w.flatten(1), SPARSITY).view_as(w) for w in tensors[3:5]]
    if kind == "bool":
        return lambda: op(*tensors, *masks)
    masks = [m.float() for m in masks]
    if kind == "float":
        return lambda: op(*tensors, *masks)
    return lambda: op(*tensors, *(_to_bool(m) for m in masks))


@pytest.mark.parametrize("kind", KINDS)
def test_cell_forward_b1(benchmark, kind):
    benchmark.group = "masked_lstm_cell forward B=1, mask kinds"
    step = _call(ops.masked_lstm_cell, kind, batch=1)
    with torch.no_grad():
        benchmark(step)


@pytest.mark.parametrize("kind", KINDS)
def test_sequence_forward_t100_b16(benchmark, kind):
    benchmark.group = "masked_lstm forward T=100 B=16, mask kinds"
    step = _call(ops.masked_lstm, kind, batch=16, steps=100)
    with torch.no_grad():
        benchmark(step)
