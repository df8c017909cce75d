"""The masked LSTM ops (cell and sequence) against their reference twins, torch.nn.LSTMCell,
gradcheck, opcheck and torch.compile; the fallback without the compiled extension; bad input."""

import sys

import pytest
import torch

import hapruned
from hapruned import ops

import processes

TOLERANCE = {torch.float32: {"atol": 2e-5, "rtol": 1e-4}, torch.float64: {"atol": 1e-10, "rtol": 1e-9}}
# On a GPU, float32 results differ from the CPU twin's by more: cuBLAS picks its own blocking and reduction
# order per shape (the op multiplies all steps' inputs in one GEMM, the twin step by step) and the gate
# kernels use CUDA's expf and tanhf. Measured on an H200: up to 3.3e-5 absolute. float64 stays tight.
# The emulated CUDA device runs the CPU's GEMMs and maths, so the CPU tolerances hold there.
CUDA_FLOAT32_TOLERANCE = {"atol": 1e-4, "rtol": 1e-3}


def _tolerance(dtype, device):
    return CUDA_FLOAT32_TOLERANCE if dtype == torch.float32 and torch.device(device).type == "cuda" else TOLERANCE[dtype]


def _mask(shape, sparsity, generator, dtype=torch.bool):
    """A random mask with exactly round(sparsity * n) zeros per group."""
    groups, n = shape[0], shape[1] * shape[2]
    scores = torch.rand(groups, n, generator=generator)
    keep = ops.reference_magnitude_prune_mask(scores, sparsity)
    return keep.reshape(shape).to(dtype)


def _inputs(groups, batch, inputs, hidden, dtype, device, sparsity=0.5, steps=None, non_contiguous=False, seed=0):
    """Random LSTM arguments; x has a leading time axis when ``steps`` is given. With ``non_contiguous``
    every tensor is a strided view (every other element of a twice-as-wide tensor)."""
    gen = torch.Generator().manual_seed(seed)
    x_shape = (groups, batch, inputs) if steps is None else (steps, groups, batch, inputs)
    shapes = [x_shape, (groups, batch, hidden), (groups, batch, hidden), (groups, 4 * hidden, inputs),
              (groups, 4 * hidden, hidden), (groups, 4 * hidden)]

    def make(shape):
        if non_contiguous:
            return torch.randn(*shape[:-1], 2 * shape[-1], generator=gen, dtype=dtype)[..., ::2].to(device)
        return torch.randn(*shape, generator=gen, dtype=dtype).to(device)

    tensors = [make(s) for s in shapes]
    tensors[3] = tensors[3] * 0.5  # keep gates out of deep saturation so gradients are informative
    tensors[4] = tensors[4] * 0.3
    masks = [None, None]
    if sparsity is not None:
        masks = [_mask(tensors[k].shape, sparsity, gen).to(device) for k in (3, 4)]
    return tensors, masks


def _grads(fn, tensors, masks):
    """Outputs and gradients of all tensor inputs under a loss that weights every output element."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    y, (h, c) = fn(*leaves, *masks) if leaves[0].ndim == 4 else (None, fn(*leaves, *masks))
    gen = torch.Generator().manual_seed(1)
    outputs = [o for o in (y, h, c) if o is not None]
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype).to(o.device)).sum() for o in outputs)
    loss.backward()
    return [o.detach() for o in outputs], [leaf.grad for leaf in leaves]


def _assert_close(actual, expected, dtype, what):
    for k, (a, e) in enumerate(zip(actual, expected)):
        print(f"{what}[{k}] max |diff| = {(a - e).abs().max().item():.3g}")
        torch.testing.assert_close(a, e, **_tolerance(dtype, a.device))


CASES = [
    pytest.param(dtype, groups, sparsity, non_contiguous, id=f"{str(dtype)[6:]}-G{groups}-p{sparsity}-{'strided' if non_contiguous else 'dense'}")
    for dtype, groups, sparsity, non_contiguous in [
        (torch.float32, 1, None, False),
        (torch.float32, 3, 0.0, True),
        (torch.float32, 10, 0.5, False),
        (torch.float32, 3, 0.95, False),
        (torch.float32, 3, 1.0, True),
        (torch.float64, 1, 0.5, True),
        (torch.float64, 3, 0.95, False),
        (torch.float64, 10, None, False),
    ]
]


@pytest.mark.parametrize("dtype, groups, sparsity, non_contiguous", CASES)
def test_cell_matches_reference(device, dtype, groups, sparsity, non_contiguous):
    for batch in (1, 3, 6, 17):  # the fused small-batch path (one and two row blocks) and the GEMM path
        tensors, masks = _inputs(groups, batch, 9, 13, dtype, device, sparsity, non_contiguous=non_contiguous)
        out, grads = _grads(ops.masked_lstm_cell, tensors, masks)
        ref_out, ref_grads = _grads(ops.reference_masked_lstm_cell, tensors, masks)
        _assert_close(out, ref_out, dtype, f"cell B={batch} outputs")
        _assert_close(grads, ref_grads, dtype, f"cell B={batch} grads")


@pytest.mark.parametrize("dtype, groups, sparsity, non_contiguous", CASES)
def test_seq_matches_reference(device, dtype, groups, sparsity, non_contiguous):
    # batches over several row blocks of the CPU kernel, hidden sizes with and without a partial panel
    for steps, batch, hidden in ((1, 2, 11), (5, 3, 11), (4, 13, 20), (3, 8, 16)):
        tensors, masks = _inputs(groups, batch, 7, hidden, dtype, device, sparsity, steps, non_contiguous)
        out, grads = _grads(ops.masked_lstm, tensors, masks)
        ref_out, ref_grads = _grads(ops.reference_masked_lstm, tensors, masks)
        _assert_close(out, ref_out, dtype, f"seq T={steps} outputs")
        _assert_close(grads, ref_grads, dtype, f"seq T={steps} grads")


@pytest.mark.parametrize("threads", [2, 3])
def test_kernels_agree_across_thread_counts(threads):
    """At sizes whose work is shared between threads (H = 128): single steps by group (B = 1) and through
    packed weights (B = 17), sequences by group (10 groups) and with each step split over the threads
    (1 group), forward and backward, and the prune mask, all equal their one-thread results."""
    cases = [(10, 1, None), (10, 17, None), (10, 4, 3), (1, 40, 3)]
    previous = torch.get_num_threads()
    results = {}
    try:
        for n in (1, threads):
            torch.set_num_threads(n)
            for groups, batch, steps in cases:
                tensors, masks = _inputs(groups, batch, 9, 128, torch.float64, "cpu", 0.9, steps)
                op = ops.masked_lstm_cell if steps is None else ops.masked_lstm
                results[n, groups, batch, steps] = _grads(op, tensors, masks)
            weight = torch.randn(10, 70_000, generator=torch.Generator().manual_seed(0))
            results[n, "prune"] = ops.magnitude_prune_mask(weight, 0.9)
    finally:
        torch.set_num_threads(previous)
    for groups, batch, steps in cases:
        (out_1, grads_1), (out_n, grads_n) = results[1, groups, batch, steps], results[threads, groups, batch, steps]
        _assert_close(out_n + grads_n, out_1 + grads_1, torch.float64, f"G={groups} B={batch} T={steps}, {threads} threads")
    assert torch.equal(results[threads, "prune"], results[1, "prune"])


def test_float_masks_match_reference_cpu():
    """Float masks (read in the weights' dtype, not as bytes) through the vectorised paths: single steps
    in dot-product form (B = 1, 6) and through the packed weights (B = 17), and the sequence."""
    for batch, steps in ((1, None), (6, None), (17, None), (13, 4)):
        tensors, masks = _inputs(3, batch, 9, 20, torch.float32, "cpu", 0.5, steps)
        masks = [m.float() for m in masks]
        if steps is None:
            fn, ref = ops.masked_lstm_cell, ops.reference_masked_lstm_cell
        else:
            fn, ref = ops.masked_lstm, ops.reference_masked_lstm
        out, grads = _grads(fn, tensors, masks)
        ref_out, ref_grads = _grads(ref, tensors, masks)
        _assert_close(out + grads, ref_out + ref_grads, torch.float32, f"float masks B={batch} T={steps}")


# Every path of the kernels: single steps in dot-product form (B = 1, 6) and through the packed
# weights (B = 17), and the sequence (T = 4).
PATHS = [(1, None), (6, None), (17, None), (13, 4)]


def _op_and_twin(steps):
    return (ops.masked_lstm_cell, ops.reference_masked_lstm_cell) if steps is None else (ops.masked_lstm, ops.reference_masked_lstm)


@pytest.mark.parametrize("mask_dtype", [torch.float32, torch.float64])
def test_float_masks_other_than_0_and_1_multiply(device, mask_dtype):
    """A float mask is a factor per weight (converted to the weights' dtype), not a keep/drop flag."""
    for batch, steps in PATHS:
        tensors, masks = _inputs(3, batch, 9, 20, torch.float32, device, 0.5, steps)
        gen = torch.Generator().manual_seed(batch)
        factors = [(torch.rand(m.shape, generator=gen, dtype=mask_dtype) * 3 - 1).to(device) * m for m in masks]
        op, twin = _op_and_twin(steps)
        out, grads = _grads(op, tensors, factors)
        ref_out, ref_grads = _grads(twin, tensors, factors)
        _assert_close(out + grads, ref_out + ref_grads, torch.float32, f"factor masks B={batch} T={steps}")


FLOAT_MASK_WRITES = {
    "zero_": lambda m, other: m.zero_(),
    "copy_": lambda m, other: m.copy_(other),
    "mul_": lambda m, other: m.mul_(0.5),
    # writes that the version counter does not see
    "data.zero_": lambda m, other: m.data.zero_(),
    "data.copy_": lambda m, other: m.data.copy_(other),
    "numpy[:] = 0": lambda m, other: m.numpy().__setitem__(slice(None), 0),
    "numpy[:] = other": lambda m, other: m.numpy().__setitem__(slice(None), other.numpy()),
}


@pytest.mark.parametrize("write", FLOAT_MASK_WRITES)
@pytest.mark.parametrize("steps", [None, 3], ids=["cell", "sequence"])
def test_changes_to_a_float_mask_are_seen(write, steps):
    """Whatever way a float mask changes between two calls, the kernels compute with its new values,
    as the reference twin does; also short-lived masks, whose ids may be reused."""
    tensors, (mask_ih, mask_hh) = _inputs(3, 2, 9, 20, torch.float64, "cpu", 0.5, steps)
    op, reference = ((ops.masked_lstm_cell, ops.reference_masked_lstm_cell) if steps is None
                     else (ops.masked_lstm, ops.reference_masked_lstm))

    def check(mask_hh, what):
        out, expected = op(*tensors, mask_ih, mask_hh), reference(*tensors, mask_ih, mask_hh)
        if steps is not None:  # (y, (h, c))
            out, expected = (out[0], *out[1]), (expected[0], *expected[1])
        _assert_close(out, expected, torch.float64, what)

    float_hh, other = mask_hh.double(), mask_hh.flip(1).double()
    check(float_hh, "before")
    FLOAT_MASK_WRITES[write](float_hh, other)
    check(float_hh, write)
    for seed in range(3):
        _, (_, float_hh) = _inputs(3, 2, 9, 20, torch.float64, "cpu", 0.5, steps, seed=seed)
        check(float_hh.double(), f"mask {seed}")


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
def test_non_finite_pruned_weights_give_nan_with_either_mask_kind(device, mask_dtype):
    """One rule for both mask kinds and the twin: the mask multiplies, so a NaN or an infinity in a
    pruned weight makes what it feeds NaN (0 * NaN), as in the twin and torch.nn.utils.prune."""
    for batch, steps in PATHS:
        tensors, masks = _inputs(3, batch, 9, 20, torch.float32, device, 0.5, steps)
        pruned_hh, pruned_ih = (~masks[1][1]).nonzero()[0], (~masks[0][2]).nonzero()[0]
        tensors[4][1][tuple(pruned_hh)] = float("nan")  # group 1's recurrent weights
        tensors[3][2][tuple(pruned_ih)] = float("inf")  # group 2's input weights
        masks = [m.to(mask_dtype) for m in masks]
        op, twin = _op_and_twin(steps)
        out, grads = _grads(op, tensors, masks)
        ref_out, ref_grads = _grads(twin, tensors, masks)
        assert ref_out[-1][1:].isnan().any(dim=(-2, -1)).all()  # groups 1 and 2 reached by a NaN
        assert not ref_out[-1][0].isnan().any()
        for k, (a, e) in enumerate(zip(out + grads, ref_out + ref_grads)):
            torch.testing.assert_close(a, e, equal_nan=True, **_tolerance(torch.float32, device), msg=f"B={batch} T={steps} [{k}]")


@pytest.mark.parametrize("used", ["y", "c_T"])
def test_seq_gradient_of_one_output_only(used):
    """Unused outputs reach the backward as None (not materialised zeros) and count as zero."""
    tensors, masks = _inputs(3, 5, 7, 11, torch.float64, "cpu", 0.5, steps=4)
    grads = {}
    for name, fn in (("op", ops.masked_lstm), ("reference", ops.reference_masked_lstm)):
        leaves = [t.detach().clone().requires_grad_() for t in tensors]
        y, (_, c) = fn(*leaves, *masks)
        (y if used == "y" else c).pow(2).sum().backward()
        grads[name] = [leaf.grad for leaf in leaves]
    _assert_close(grads["op"], grads["reference"], torch.float64, f"grads of {used} alone")


def test_masks_zero_the_pruned_connections():
    """With every weight pruned the gates see only the bias, and float masks act like bool ones."""
    tensors, _ = _inputs(3, 2, 5, 6, torch.float64, "cpu", None)
    x, h, c, w_ih, w_hh, bias = tensors
    zeros_ih, zeros_hh = torch.zeros_like(w_ih), torch.zeros_like(w_hh)
    out = ops.masked_lstm_cell(x, h, c, w_ih, w_hh, bias, zeros_ih.bool(), zeros_hh.bool())
    expected = ops.masked_lstm_cell(torch.zeros_like(x), torch.zeros_like(h), c, w_ih, w_hh, bias)
    _assert_close(out, expected, torch.float64, "all pruned")
    _, (mask_ih, mask_hh) = _inputs(3, 2, 5, 6, torch.float64, "cpu", 0.5)
    as_float = ops.masked_lstm_cell(*tensors, mask_ih.double(), mask_hh.double())
    as_bool = ops.masked_lstm_cell(*tensors, mask_ih, mask_hh)
    _assert_close(as_float, as_bool, torch.float64, "float vs bool mask")


def test_reference_matches_lstm_cell_per_group():
    """The twin itself: each group equals torch.nn.LSTMCell with that group's weights."""
    tensors, _ = _inputs(3, 4, 5, 7, torch.float64, "cpu", None)
    x, h, c, w_ih, w_hh, bias = tensors
    h_new, c_new = ops.reference_masked_lstm_cell(*tensors)
    for g in range(3):
        cell = torch.nn.LSTMCell(5, 7, dtype=torch.float64)
        with torch.no_grad():
            cell.weight_ih.copy_(w_ih[g])
            cell.weight_hh.copy_(w_hh[g])
            cell.bias_ih.copy_(bias[g])
            cell.bias_hh.zero_()
        expected = cell(x[g], (h[g], c[g]))
        _assert_close((h_new[g], c_new[g]), expected, torch.float64, f"group {g} vs LSTMCell")


def test_gradcheck(device):
    for batch in (1, 3):
        tensors, masks = _inputs(2, batch, 3, 4, torch.float64, device, 0.5)
        leaves = [t.requires_grad_() for t in tensors]
        assert torch.autograd.gradcheck(lambda *a: ops.masked_lstm_cell(*a, *masks), leaves)
    tensors, masks = _inputs(2, 2, 3, 4, torch.float64, device, 0.5, steps=3)
    leaves = [t.requires_grad_() for t in tensors]
    def flat_seq(*args):
        y, (h, c) = ops.masked_lstm(*args, *masks)
        return y, c  # h is y[-1]

    assert torch.autograd.gradcheck(flat_seq, leaves)


def test_opcheck(device):
    cases = [(1, 0.5, torch.float32), (3, 0.5, torch.float32), (3, None, None), (1, 0.5, torch.bool), (17, 0.5, torch.bool)]
    for batch, sparsity, mask_dtype in cases:
        tensors, masks = _inputs(2, batch, 3, 4, torch.float32, device, sparsity)
        masks = [m if m is None else m.to(mask_dtype) for m in masks]
        torch.library.opcheck(torch.ops.hapruned.masked_lstm_cell.default, [t.requires_grad_() for t in tensors] + masks)
        seq_tensors, _ = _inputs(2, batch, 3, 4, torch.float32, device, None, steps=3)
        torch.library.opcheck(torch.ops.hapruned.masked_lstm_seq.default, [t.requires_grad_() for t in seq_tensors] + masks)
        x, h, c, w_ih, w_hh, bias = (t.detach() for t in tensors)
        h_new, c_new, gates = torch.ops.hapruned.masked_lstm_cell(x, h, c, w_ih, w_hh, bias, *masks)
        backward_args = [torch.randn_like(h_new), torch.randn_like(c_new), x, h, c, w_ih, w_hh, *masks, gates, c_new]
        torch.library.opcheck(torch.ops.hapruned.masked_lstm_cell_backward.default, backward_args)


def test_compile(device):
    tensors, masks = _inputs(2, 3, 4, 5, torch.float32, device, 0.5, steps=2)

    def step(x, h, c, w_ih, w_hh, bias, mask_ih, mask_hh):
        y, (h_n, c_n) = ops.masked_lstm(x, h, c, w_ih, w_hh, bias, mask_ih, mask_hh)
        h_next, c_next = ops.masked_lstm_cell(x[-1], h_n, c_n, w_ih, w_hh, bias, mask_ih, mask_hh)
        return y.sum(0), h_next, c_next

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    expected = step(*tensors, *masks)
    actual = compiled(*tensors, *masks)
    _assert_close(actual, expected, torch.float32, "compiled")


def test_reference_fallback_without_extension():
    """Without hapruned._C, import warns once and the ops run on the references (a fresh interpreter)."""
    script = (
        "import sys, warnings\n"
        "sys.modules['hapruned._C'] = None\n"  # makes `from hapruned import _C` raise ImportError
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import hapruned, hapruned.ops, hapruned.nn\n"
        "    import importlib; importlib.import_module('hapruned.ops')\n"
        "messages = [str(w.message) for w in caught if 'hapruned._C' in str(w.message)]\n"
        "assert len(messages) == 1, messages\n"
        "assert not hapruned.HAS_EXTENSION\n"
        "import torch\n"
        "from hapruned import ops\n"
        "g = torch.Generator().manual_seed(0)\n"
        "args = [torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True) for s in\n"
        "        [(2, 3, 4), (2, 3, 5), (2, 3, 5), (2, 20, 4), (2, 20, 5), (2, 20)]]\n"
        "assert torch.autograd.gradcheck(lambda *a: ops.masked_lstm_cell(*a), args)\n"
        "w = torch.randn(3, 50, generator=g)\n"
        "assert torch.equal(ops.magnitude_prune_mask(w, 0.3), ops.reference_magnitude_prune_mask(w, 0.3))\n"
        "y, _ = hapruned.nn.GroupedLSTM(2, 4, 5, 2)(torch.randn(3, 2, 1, 4))\n"
        "assert y.shape == (3, 2, 1, 5)\n"
        "print('fallback ok')\n"
    )
    result = processes.run([sys.executable, "-c", script], timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fallback ok" in result.stdout


def _valid_args():
    tensors, masks = _inputs(3, 2, 4, 5, torch.float32, "cpu", 0.5)
    return dict(zip(["x", "h", "c", "w_ih", "w_hh", "bias", "mask_ih", "mask_hh"], tensors + masks))


BAD_CELL_INPUTS = [
    ("x", lambda a: a["x"][0], "x must be"),
    ("h", lambda a: a["h"][:, :1], "h must have shape"),
    ("c", lambda a: a["c"][:2], "c must have shape"),
    ("w_ih", lambda a: a["w_ih"][:, :, :3], "w_ih must have shape"),
    ("w_hh", lambda a: a["w_hh"][:, :8], "w_hh must have shape"),
    ("bias", lambda a: a["bias"][:2], "bias must have shape"),
    ("w_hh", lambda a: a["w_hh"].double(), "w_hh must have the dtype"),
    ("x", lambda a: a["x"].long(), "x must be float32 or float64"),
    ("mask_ih", lambda a: a["mask_ih"][:, :4], "mask_ih must have the shape"),
    ("mask_hh", lambda a: a["mask_hh"].int(), "mask_hh must be bool or floating"),
    ("h", lambda a: a["h"].to("meta"), "h must be on the device"),
]


@pytest.mark.parametrize("name, corrupt, message", BAD_CELL_INPUTS, ids=[f"{n}:{m}" for n, _, m in BAD_CELL_INPUTS])
def test_cell_bad_input_names_the_argument(name, corrupt, message):
    args = _valid_args()
    args[name] = corrupt(args)
    with pytest.raises((ValueError, TypeError), match=message):
        ops.masked_lstm_cell(**args)


def test_seq_bad_input_names_the_argument():
    args = _valid_args()
    x_seq = args.pop("x")
    with pytest.raises(ValueError, match="x_seq must be"):
        ops.masked_lstm(x_seq, args.pop("h"), args.pop("c"), **args)
    args = _valid_args()
    with pytest.raises(ValueError, match="x_seq must hold at least one time step"):
        ops.masked_lstm(args["x"][None, :0].expand(0, -1, -1, -1), args["h"], args["c"], args["w_ih"], args["w_hh"], args["bias"])


@pytest.mark.skipif(not hapruned.HAS_EXTENSION, reason="needs the compiled extension")
def test_compiled_op_checks_its_inputs():
    """Direct torch.ops calls (bypassing the wrapper) still get an error naming the argument."""
    args = _valid_args()
    args["mask_hh"] = args["mask_hh"].float()[:, :8]
    args["mask_ih"] = args["mask_ih"].float()
    with pytest.raises(RuntimeError, match="mask_hh"):
        torch.ops.hapruned.masked_lstm_cell(*args.values())
