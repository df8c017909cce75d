"""The sparse LSTM step op against its reference twin and the dense masked cell, opcheck, the fallback
without the compiled extension, and bad input."""

import sys

import pytest
import torch

import hapruned
from hapruned import ops

import processes

TOLERANCE = {"atol": 2e-6, "rtol": 1e-5}


def _layer(inputs, hidden, sparsity, batch, value_dtype=torch.float32, index_dtype=torch.uint8, seed=0):
    """Random op arguments: a pruned [W_ih | W_hh] (exactly round(sparsity * size) zeros) in CSR form, and
    the dense weight and keep-mask it came from."""
    gen = torch.Generator().manual_seed(seed)
    weight = 0.5 * torch.randn(4 * hidden, inputs + hidden, generator=gen)
    keep = ops.reference_magnitude_prune_mask(torch.rand(1, weight.numel(), generator=gen), sparsity).view_as(weight)
    weight = (weight * keep).to(value_dtype).float()  # the values the op will read
    rows, cols = weight.nonzero(as_tuple=True)
    row_ptr = torch.zeros(4 * hidden + 1, dtype=torch.int32)
    row_ptr[1:] = torch.bincount(rows, minlength=4 * hidden).cumsum(0)
    x, h, c = (torch.randn(batch, n, generator=gen) for n in (inputs, hidden, hidden))
    bias = torch.randn(4 * hidden, generator=gen)
    args = (x, h, c, row_ptr, cols.to(index_dtype), weight[rows, cols].to(value_dtype), bias)
    return args, weight, keep


def _assert_close(actual, expected, what):
    for a, e, name in zip(actual, expected, ("h", "c")):
        print(f"{what} {name}: max |diff| = {(a - e).abs().max().item():.3g}")
        torch.testing.assert_close(a, e, **TOLERANCE)


CASES = [
    # inputs, hidden, sparsity, value dtype, index dtype: the actor's shapes, odd ones, more than 256
    # columns (16-bit indices), an empty matrix and a full one
    (10, 128, 0.95, torch.float32, torch.uint8),
    (10, 128, 0.95, torch.float16, torch.uint8),
    (9, 13, 0.5, torch.float32, torch.int32),
    (300, 7, 0.9, torch.float16, torch.int16),
    (5, 6, 1.0, torch.float32, torch.uint8),
    (3, 5, 0.0, torch.float32, torch.int16),
]


@pytest.mark.parametrize("inputs, hidden, sparsity, value_dtype, index_dtype", CASES)
@pytest.mark.parametrize("batch", [1, 3, 8, 13])
def test_sparse_step_matches_reference_and_dense_cell(inputs, hidden, sparsity, value_dtype, index_dtype, batch):
    args, weight, keep = _layer(inputs, hidden, sparsity, batch, value_dtype, index_dtype)
    out = ops.sparse_lstm_step(*args)
    _assert_close(out, ops.reference_sparse_lstm_step(*args), f"B={batch} vs reference")
    x, h, c, *_, bias = args
    dense = ops.masked_lstm_cell(x[None], h[None], c[None], weight[None, :, :inputs].contiguous(),
                                 weight[None, :, inputs:].contiguous(), bias[None], keep[None, :, :inputs].contiguous(),
                                 keep[None, :, inputs:].contiguous())
    _assert_close(out, [t[0] for t in dense], f"B={batch} vs dense masked cell")


@pytest.mark.cuda
def test_cuda_runs_the_reference():
    """No CUDA kernel (a CPU edge device is the target): CUDA tensors run the reference twin."""
    args, _, _ = _layer(10, 16, 0.9, 3, torch.float16)
    out = ops.sparse_lstm_step(*(t.cuda() for t in args))
    _assert_close([t.cpu() for t in out], ops.sparse_lstm_step(*args), "cuda (reference) vs cpu")


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_reference_reads_csr_like_torch():
    """The twin's dense weight is torch's own CSR -> dense conversion (an empty row included)."""
    args, weight, _ = _layer(4, 3, 0.7, 1)
    x, h, c, row_ptr, col_idx, values, bias = args
    csr = torch.sparse_csr_tensor(row_ptr.long(), col_idx.long(), values, weight.shape, check_invariants=True)
    expected = ops.reference_masked_lstm_cell(x[None], h[None], c[None], csr.to_dense()[None, :, :4],
                                              csr.to_dense()[None, :, 4:], bias[None])
    _assert_close(ops.reference_sparse_lstm_step(*args), [t[0] for t in expected], "twin vs torch CSR")


def test_strided_inputs():
    args, _, _ = _layer(7, 9, 0.8, 5)
    strided = [torch.stack([t, t], -1)[..., 0] for t in args[:3]] + list(args[3:])
    assert not strided[0].is_contiguous()
    _assert_close(ops.sparse_lstm_step(*strided), ops.reference_sparse_lstm_step(*args), "strided")


@pytest.mark.parametrize("batch, value_dtype, index_dtype", [
    (1, torch.float32, torch.uint8), (4, torch.float16, torch.int16), (2, torch.float32, torch.int32)])
def test_opcheck(batch, value_dtype, index_dtype):
    args, _, _ = _layer(6, 5, 0.6, batch, value_dtype, index_dtype)
    torch.library.opcheck(torch.ops.hapruned.sparse_lstm_step.default, args)


def test_compile():
    """The raw op in a compiled graph (the wrapper's checks read the CSR arrays, so they stay outside)."""
    args, _, _ = _layer(6, 5, 0.6, 2)
    compiled = torch.compile(torch.ops.hapruned.sparse_lstm_step.default, fullgraph=True, backend="aot_eager")
    _assert_close(compiled(*args), ops.sparse_lstm_step(*args), "compiled")


def test_reference_fallback_without_extension():
    script = (
        "import sys\n"
        "sys.modules['hapruned._C'] = None\n"
        "import warnings; warnings.simplefilter('ignore')\n"
        "import torch\n"
        "from hapruned import ops\n"
        "w = torch.zeros(8, 5); w[1, 0] = 1.0; w[6, 4] = -2.0\n"
        "rows, cols = w.nonzero(as_tuple=True)\n"
        "row_ptr = torch.tensor([0, 0, 1, 1, 1, 1, 1, 2, 2], dtype=torch.int32)\n"
        "x, h, c = torch.ones(1, 3), torch.ones(1, 2), torch.ones(1, 2)\n"
        "out = ops.sparse_lstm_step(x, h, c, row_ptr, cols.to(torch.uint8), w[rows, cols], torch.zeros(8))\n"
        "ref = ops.reference_masked_lstm_cell(x[None], h[None], c[None], w[None, :, :3], w[None, :, 3:],\n"
        "                                     torch.zeros(1, 8))\n"
        "assert all(torch.allclose(a, b[0]) for a, b in zip(out, ref))\n"
        "print('fallback ok')\n"
    )
    result = processes.run([sys.executable, "-c", script], timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fallback ok" in result.stdout


def _corrupt(name, change):
    def apply(args):
        args = list(args)
        index = ["x", "h", "c", "row_ptr", "col_idx", "values", "bias"].index(name)
        args[index] = change(args[index])
        return args

    return apply


BAD_INPUTS = [
    (_corrupt("x", torch.Tensor.double), ValueError, "x must be a 2-D float32"),
    (_corrupt("h", lambda t: t[:, :-1]), ValueError, "h and c must be"),
    (_corrupt("row_ptr", torch.Tensor.long), TypeError, "row_ptr must be int32"),
    (_corrupt("col_idx", torch.Tensor.long), TypeError, "col_idx must be uint8 or int16 or int32"),
    (_corrupt("values", torch.Tensor.double), TypeError, "values must be float32 or float16"),
    (_corrupt("values", lambda t: t[:-1]), ValueError, "values must have one entry per col_idx"),
    (_corrupt("bias", lambda t: t[:-1]), ValueError, "row_ptr and bias must have"),
    (_corrupt("row_ptr", lambda t: t.flip(0)), ValueError, "row_ptr must be non-decreasing from 0"),
    (_corrupt("col_idx", lambda t: t + 100), ValueError, "col_idx must lie in"),
]


@pytest.mark.parametrize("corrupt, error, message", BAD_INPUTS, ids=[m for _, _, m in BAD_INPUTS])
def test_bad_input_names_the_argument(corrupt, error, message):
    args, _, _ = _layer(6, 5, 0.5, 2)
    with pytest.raises(error, match=message):
        ops.sparse_lstm_step(*corrupt(args))


@pytest.mark.skipif(not hapruned.HAS_EXTENSION, reason="needs the compiled extension")
@pytest.mark.parametrize("corrupt, message", [
    (_corrupt("col_idx", lambda t: t + 100), "col_idx must lie in"),
    (_corrupt("col_idx", lambda t: -t.to(torch.int16) - 1), "col_idx must lie in"),
    (_corrupt("row_ptr", lambda t: t.flip(0)), "row_ptr must run from 0"),
    (_corrupt("row_ptr", lambda t: torch.cat([t[:1], t[1:-1].flip(0), t[-1:]])), "row_ptr must be non-decreasing"),
    (_corrupt("values", lambda t: t[:-1]), "values must have shape"),
])
def test_compiled_op_checks_its_csr_arrays(corrupt, message):
    """Direct torch.ops calls cannot read out of bounds: the kernel checks the CSR arrays itself."""
    args, _, _ = _layer(6, 5, 0.5, 2)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.hapruned.sparse_lstm_step(*corrupt(args))
