"""The ``torch.ops.hapruned`` operators: fake kernels, autograd, fallbacks, and the typed wrappers.

The schemas live in C++ (csrc/ops.cpp) with the CPU and CUDA kernels. Without the compiled extension
the same schemas are defined here. Either way the pure-PyTorch twins are registered for
CompositeExplicitAutograd, so they serve every device that has no kernel of its own.
"""

import os

import torch

from hapruned._extension import HAS_EXTENSION
from hapruned.ops import reference

SCHEMAS = {
    "magnitude_prune_mask": "(Tensor weight, Tensor n_prune) -> Tensor",
    "masked_lstm_cell": (
        "(Tensor x, Tensor h, Tensor c, Tensor w_ih, Tensor w_hh, Tensor bias, Tensor? mask_ih, Tensor? mask_hh)"
        " -> (Tensor, Tensor, Tensor)"
    ),
    "masked_lstm_cell_backward": (
        "(Tensor grad_h, Tensor grad_c, Tensor x, Tensor h, Tensor c, Tensor w_ih, Tensor w_hh, Tensor? mask_ih,"
        " Tensor? mask_hh, Tensor gates, Tensor c_new, bool input_grad=True) -> (Tensor, Tensor, Tensor, Tensor, Tensor,"
        " Tensor)"
    ),
    "masked_lstm_seq": (
        "(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor bias, Tensor? mask_ih, Tensor? mask_hh)"
        " -> (Tensor, Tensor, Tensor)"
    ),
    "masked_lstm_seq_backward": (
        "(Tensor grad_y, Tensor grad_cs, Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? mask_ih,"
        " Tensor? mask_hh, Tensor y, Tensor cs, Tensor gates, bool input_grad=True) -> (Tensor, Tensor, Tensor, Tensor,"
        " Tensor, Tensor)"
    ),
    "sparse_lstm_step": (
        "(Tensor x, Tensor h, Tensor c, Tensor row_ptr, Tensor col_idx, Tensor values, Tensor bias) -> (Tensor, Tensor)"
    ),
    "sparse_lstm_seq": (
        "(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor bias, Tensor layout_ih, Tensor layout_hh,"
        " bool save=True) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
    "sparse_lstm_seq_backward": (
        "(Tensor grad_y, Tensor? grad_c_n, Tensor w_ih, Tensor w_hh, Tensor layout_ih, Tensor layout_hh,"
        " Tensor x_panels, Tensor h_panels, Tensor gates, Tensor cs, bool input_grad=True) -> (Tensor, Tensor, Tensor,"
        " Tensor, Tensor, Tensor)"
    ),
    "sparse_linear": "(Tensor x, Tensor weight, Tensor bias, Tensor layout) -> Tensor",
    "sparse_linear_backward": (
        "(Tensor grad_out, Tensor x, Tensor weight, Tensor layout) -> (Tensor, Tensor, Tensor)"
    ),
}


_FALLBACKS = {
    "magnitude_prune_mask": reference.reference_keep_mask,
    "masked_lstm_cell": reference.reference_masked_lstm_cell_forward,
    "masked_lstm_cell_backward": reference.reference_masked_lstm_cell_backward,
    "masked_lstm_seq": reference.reference_masked_lstm_seq_forward,
    "masked_lstm_seq_backward": reference.reference_masked_lstm_seq_backward,
    "sparse_lstm_step": reference.reference_sparse_lstm_step,
    "sparse_lstm_seq": reference.reference_sparse_lstm_seq_forward,
    "sparse_lstm_seq_backward": reference.reference_sparse_lstm_seq_backward,
    "sparse_linear": reference.reference_sparse_linear,
    "sparse_linear_backward": reference.reference_sparse_linear_backward,
}

_libraries = []  # torch.library.Library objects must outlive the module's import
if not HAS_EXTENSION:
    _definitions = torch.library.Library("hapruned", "DEF")
    for _name, _schema in SCHEMAS.items():
        _definitions.define(_name + _schema)
    _libraries.append(_definitions)
_fallback = torch.library.Library("hapruned", "IMPL")
for _name, _kernel in _FALLBACKS.items():
    _fallback.impl(_name, _kernel, "CompositeExplicitAutograd")
_libraries.append(_fallback)

_ops = torch.ops.hapruned
_prune_op = _ops.magnitude_prune_mask.default
_cell_op = _ops.masked_lstm_cell.default
_cell_backward_op = _ops.masked_lstm_cell_backward.default
_seq_op = _ops.masked_lstm_seq.default
_seq_backward_op = _ops.masked_lstm_seq_backward.default
sparse_lstm_step_op = _ops.sparse_lstm_step.default  # unchecked: for callers that validated with check_sparse_layer
_sparse_seq_op = _ops.sparse_lstm_seq.default
_sparse_seq_backward_op = _ops.sparse_lstm_seq_backward.default
_sparse_linear_op = _ops.sparse_linear.default
_sparse_linear_backward_op = _ops.sparse_linear_backward.default


# Fake kernels: output shapes for torch.compile and meta tensors.
def _input_grad_like(x, input_grad):
    """The backward ops' gradient of x: x's shape, or empty (0,) where input_grad is False (not computed)."""
    return torch.empty_like(x) if input_grad else x.new_empty(0)


@torch.library.register_fake("hapruned::magnitude_prune_mask")
def _(weight, n_prune):
    return torch.empty_like(weight, dtype=torch.bool)


@torch.library.register_fake("hapruned::masked_lstm_cell")
def _(x, h, c, w_ih, w_hh, bias, mask_ih, mask_hh):
    return torch.empty_like(h), torch.empty_like(c), h.new_empty(h.shape[0], h.shape[1], 4 * h.shape[2])


@torch.library.register_fake("hapruned::masked_lstm_cell_backward")
def _(grad_h, grad_c, x, h, c, w_ih, w_hh, mask_ih, mask_hh, gates, c_new, input_grad=True):
    return (_input_grad_like(x, input_grad),) + tuple(torch.empty_like(t) for t in (h, c, w_ih, w_hh)) + (
        w_ih.new_empty(w_ih.shape[:2]),)


@torch.library.register_fake("hapruned::masked_lstm_seq")
def _(x, h0, c0, w_ih, w_hh, bias, mask_ih, mask_hh):
    steps, (groups, batch, hidden) = x.shape[0], h0.shape
    y = h0.new_empty(steps, groups, batch, hidden)
    return y, torch.empty_like(y), h0.new_empty(groups, steps, batch, 4 * hidden)


@torch.library.register_fake("hapruned::masked_lstm_seq_backward")
def _(grad_y, grad_cs, x, h0, c0, w_ih, w_hh, mask_ih, mask_hh, y, cs, gates, input_grad=True):
    return (_input_grad_like(x, input_grad),) + tuple(torch.empty_like(t) for t in (h0, c0, w_ih, w_hh)) + (
        w_ih.new_empty(w_ih.shape[:2]),)


@torch.library.register_fake("hapruned::sparse_lstm_step")
def _(x, h, c, row_ptr, col_idx, values, bias):
    return torch.empty_like(h), torch.empty_like(c)


@torch.library.register_fake("hapruned::sparse_lstm_seq")
def _(x, h0, c0, w_ih, w_hh, bias, layout_ih, layout_hh, save=True):
    (steps, groups, batch, inputs), hidden = x.shape, h0.shape[2]
    _, padded, panels = reference.panel_shape(steps, batch)
    kept = groups if save else 0
    return (
        h0.new_empty(steps, groups, batch, hidden),
        torch.empty_like(c0),
        h0.new_empty(kept, panels, inputs, padded),
        h0.new_empty(kept, panels, hidden, padded),
        h0.new_empty(kept, steps, 4 * hidden, batch),
        h0.new_empty(kept, steps + 1, hidden, batch),
    )


@torch.library.register_fake("hapruned::sparse_lstm_seq_backward")
def _(grad_y, grad_c_n, w_ih, w_hh, layout_ih, layout_hh, x_panels, h_panels, gates, cs, input_grad=True):
    steps, groups, batch, hidden = grad_y.shape
    grad_x = _input_grad_like(grad_y.new_empty(steps, groups, batch, w_ih.shape[2]), input_grad)
    state = grad_y.new_empty(groups, batch, hidden)
    return grad_x, state, torch.empty_like(state), torch.empty_like(w_ih), torch.empty_like(w_hh), w_ih.new_empty(w_ih.shape[:2])


@torch.library.register_fake("hapruned::sparse_linear")
def _(x, weight, bias, layout):
    return x.new_empty(*x.shape[:-1], weight.shape[1])


@torch.library.register_fake("hapruned::sparse_linear_backward")
def _(grad_out, x, weight, layout):
    return torch.empty_like(x), torch.empty_like(weight), weight.new_empty(weight.shape[:2])


# Autograd: the backward ops. Masks get no gradient; double backward is not supported. The input's
# gradient is computed only where the input needs one (an actor's first layer, a critic whose input is
# N*(K+5) wide: the product would be a large share of the backward).
def _without_unneeded_input_grad(ctx, grads):
    return grads if ctx.needs_input_grad[0] else (None,) + tuple(grads[1:])


def _setup_cell(ctx, inputs, output):
    x, h, c, w_ih, w_hh, _, mask_ih, mask_hh = inputs
    _, c_new, gates = output
    ctx.mark_non_differentiable(gates)
    ctx.set_materialize_grads(False)  # unused outputs arrive as None, not as zero tensors to allocate
    ctx.save_for_backward(x, h, c, w_ih, w_hh, mask_ih, mask_hh, gates, c_new)


def _cell_backward(ctx, grad_h, grad_c, _grad_gates):
    x, h, c, w_ih, w_hh, mask_ih, mask_hh, gates, c_new = ctx.saved_tensors
    grad_h = torch.zeros_like(h) if grad_h is None else grad_h.contiguous()
    grad_c = torch.zeros_like(c) if grad_c is None else grad_c.contiguous()
    grads = _cell_backward_op(grad_h, grad_c, x, h, c, w_ih, w_hh, mask_ih, mask_hh, gates, c_new,
                              ctx.needs_input_grad[0])
    return _without_unneeded_input_grad(ctx, grads) + (None, None)


def _setup_seq(ctx, inputs, output):
    x, h0, c0, w_ih, w_hh, _, mask_ih, mask_hh = inputs
    y, cs, gates = output
    ctx.mark_non_differentiable(gates)
    ctx.set_materialize_grads(False)  # the gates' gradient (always unused) would be a [G, T, B, 4H] zero tensor
    ctx.save_for_backward(x, h0, c0, w_ih, w_hh, mask_ih, mask_hh, y, cs, gates)


def _seq_backward(ctx, grad_y, grad_cs, _grad_gates):
    x, h0, c0, w_ih, w_hh, mask_ih, mask_hh, y, cs, gates = ctx.saved_tensors
    grad_y = torch.zeros_like(y) if grad_y is None else grad_y.contiguous()
    grad_cs = torch.zeros_like(cs) if grad_cs is None else grad_cs.contiguous()
    grads = _seq_backward_op(grad_y, grad_cs, x, h0, c0, w_ih, w_hh, mask_ih, mask_hh, y, cs, gates,
                             ctx.needs_input_grad[0])
    return _without_unneeded_input_grad(ctx, grads) + (None, None)


def _setup_sparse_seq(ctx, inputs, output):
    w_ih, w_hh, layout_ih, layout_hh = inputs[3], inputs[4], inputs[6], inputs[7]
    _, _, x_panels, h_panels, gates, cs = output
    ctx.mark_non_differentiable(x_panels, h_panels, gates, cs)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(w_ih, w_hh, layout_ih, layout_hh, x_panels, h_panels, gates, cs)


def _sparse_seq_backward(ctx, grad_y, grad_c_n, *_unused):
    w_ih, w_hh, layout_ih, layout_hh, x_panels, h_panels, gates, cs = ctx.saved_tensors
    if grad_y is None:
        steps, groups, hidden, batch = gates.shape[1], gates.shape[0], cs.shape[2], cs.shape[3]
        grad_y = cs.new_zeros(steps, groups, batch, hidden)
    grad_c_n = None if grad_c_n is None else grad_c_n.contiguous()
    grads = _sparse_seq_backward_op(grad_y.contiguous(), grad_c_n, w_ih, w_hh, layout_ih, layout_hh, x_panels, h_panels,
                                    gates, cs, ctx.needs_input_grad[0])
    return _without_unneeded_input_grad(ctx, grads) + (None, None, None)


def _setup_sparse_linear(ctx, inputs, output):
    x, weight, _, layout = inputs
    ctx.save_for_backward(x, weight, layout)


def _sparse_linear_backward(ctx, grad_out):
    x, weight, layout = ctx.saved_tensors
    return _sparse_linear_backward_op(grad_out.contiguous(), x, weight, layout) + (None,)


torch.library.register_autograd("hapruned::masked_lstm_cell", _cell_backward, setup_context=_setup_cell)
torch.library.register_autograd("hapruned::masked_lstm_seq", _seq_backward, setup_context=_setup_seq)
torch.library.register_autograd("hapruned::sparse_lstm_seq", _sparse_seq_backward, setup_context=_setup_sparse_seq)
torch.library.register_autograd("hapruned::sparse_linear", _sparse_linear_backward, setup_context=_setup_sparse_linear)


def _check_lstm_args(x, h, c, w_ih, w_hh, bias, mask_ih, mask_hh, x_name, state_names):
    """Validate shapes, dtypes and devices; return the masks contiguous, bool or in the weights' dtype."""
    tensors = {x_name: x, state_names[0]: h, state_names[1]: c, "w_ih": w_ih, "w_hh": w_hh, "bias": bias}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"{name} must be float32 or float64, got {t.dtype}")
        if t.dtype != x.dtype:
            raise TypeError(f"{name} must have the dtype of {x_name} ({x.dtype}), got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} must be on the device of {x_name} ({x.device}), got {t.device}")
    sequence = x_name == "x_seq"
    if x.ndim != (4 if sequence else 3):
        layout = "(time, groups, batch, input)" if sequence else "(groups, batch, input)"
        raise ValueError(f"{x_name} must be {layout}, got shape {tuple(x.shape)}")
    if sequence and x.shape[0] < 1:
        raise ValueError(f"{x_name} must hold at least one time step, got shape {tuple(x.shape)}")
    groups, batch, inputs = x.shape[-3:]
    if h.ndim != 3:
        raise ValueError(f"{state_names[0]} must be (groups, batch, hidden), got shape {tuple(h.shape)}")
    hidden = h.shape[2]
    expected = {
        state_names[0]: (groups, batch, hidden),
        state_names[1]: (groups, batch, hidden),
        "w_ih": (groups, 4 * hidden, inputs),
        "w_hh": (groups, 4 * hidden, hidden),
        "bias": (groups, 4 * hidden),
    }
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(
                f"{name} must have shape {shape} (groups={groups}, batch={batch}, input={inputs}, hidden={hidden} "
                f"from {x_name} and {state_names[0]}), got {tuple(tensors[name].shape)}"
            )
    masks = []
    for name, mask, weight in (("mask_ih", mask_ih, w_ih), ("mask_hh", mask_hh, w_hh)):
        if mask is not None:
            if not isinstance(mask, torch.Tensor):
                raise TypeError(f"{name} must be None or a torch.Tensor, got {type(mask).__name__}")
            if mask.shape != weight.shape:
                raise ValueError(f"{name} must have the shape of its weight {tuple(weight.shape)}, got {tuple(mask.shape)}")
            if mask.device != x.device:
                raise ValueError(f"{name} must be on the device of {x_name} ({x.device}), got {mask.device}")
            if not (mask.dtype == torch.bool or mask.dtype.is_floating_point):
                raise TypeError(f"{name} must be bool or floating point, got {mask.dtype}")
            # Bool masks go to the kernels as they are, float ones in the weights' dtype. Converting a float
            # 0/1 mask to bool costs a pass over it on every call (it can change in place, even unseen by
            # its version counter); the kernels read float masks about as fast (test_bench_mask_kinds.py).
            mask = (mask if mask.dtype == torch.bool else mask.to(x.dtype)).contiguous()
        masks.append(mask)
    return masks


def masked_lstm_cell(x, h, c, w_ih, w_hh, bias, mask_ih=None, mask_hh=None):
    """One LSTM step for G groups in one call, masks applied inside the kernel; differentiable in
    every tensor but the masks (weight gradients are masked).

    x: (groups, batch, input), h and c: (groups, batch, hidden), w_ih: (groups, 4*hidden, input),
    w_hh: (groups, 4*hidden, hidden), bias: (groups, 4*hidden), masks: None or bool/float like their
    weights. Gate order i, f, g, o. Returns (h', c'), each (groups, batch, hidden).
    """
    mask_ih, mask_hh = _check_lstm_args(x, h, c, w_ih, w_hh, bias, mask_ih, mask_hh, "x", ("h", "c"))
    h_new, c_new, _ = _cell_op(
        x.contiguous(), h.contiguous(), c.contiguous(), w_ih.contiguous(), w_hh.contiguous(), bias.contiguous(),
        mask_ih, mask_hh,
    )
    return h_new, c_new


def masked_lstm(x_seq, h0, c0, w_ih, w_hh, bias, mask_ih=None, mask_hh=None):
    """T steps of one masked LSTM layer in one call (input projection of all steps hoisted).

    x_seq: (time, groups, batch, input), h0 and c0: (groups, batch, hidden), weights and masks as in
    ``masked_lstm_cell``. Returns (y (time, groups, batch, hidden), (h_T, c_T)).
    """
    mask_ih, mask_hh = _check_lstm_args(x_seq, h0, c0, w_ih, w_hh, bias, mask_ih, mask_hh, "x_seq", ("h0", "c0"))
    y, cs, _ = _seq_op(
        x_seq.contiguous(), h0.contiguous(), c0.contiguous(), w_ih.contiguous(), w_hh.contiguous(),
        bias.contiguous(), mask_ih, mask_hh,
    )
    return y, (y[-1], cs[-1])


def magnitude_prune_mask(weight: torch.Tensor, sparsity) -> torch.Tensor:
    """Keep-mask of the largest-magnitude weights of each group, all groups in one kernel.

    weight: (groups, size) float32/float64. sparsity: float in [0, 1] or a (groups,) tensor.
    Returns bool (groups, size), True = kept, with exactly ``round(p * size)`` False per group
    (half to even); among equal magnitudes the lower flat index is pruned first.
    """
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a 2-D tensor (groups, size), got {shape}")
    if weight.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"weight must be float32 or float64, got {weight.dtype}")
    n_prune = reference.prune_counts(sparsity, weight.shape[0], weight.shape[1], weight.device)
    return _prune_op(weight.contiguous(), n_prune)


SPARSE_INDEX_DTYPES = (torch.uint8, torch.int16, torch.int32)
SPARSE_VALUE_DTYPES = (torch.float32, torch.float16)


def check_sparse_layer(row_ptr, col_idx, values, bias, input_size: int, hidden_size: int) -> None:
    """Validate one layer's CSR weights W = [W_ih | W_hh] (4*hidden, input + hidden) and its bias, as
    ``sparse_lstm_step`` takes them (see there); ValueError/TypeError naming the argument."""
    rows, cols = 4 * hidden_size, input_size + hidden_size
    expected = {"row_ptr": (row_ptr, (torch.int32,)), "col_idx": (col_idx, SPARSE_INDEX_DTYPES),
                "values": (values, SPARSE_VALUE_DTYPES), "bias": (bias, (torch.float32,))}
    for name, (t, dtypes) in expected.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in dtypes:
            raise TypeError(f"{name} must be {' or '.join(str(d)[6:] for d in dtypes)}, got {t.dtype}")
        if t.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if row_ptr.shape != (rows + 1,) or bias.shape != (rows,):
        raise ValueError(f"row_ptr and bias must have 4*hidden + 1 = {rows + 1} and 4*hidden = {rows} entries "
                         f"(hidden = {hidden_size}), got {row_ptr.numel()} and {bias.numel()}")
    nnz = col_idx.numel()
    if values.numel() != nnz:
        raise ValueError(f"values must have one entry per col_idx entry ({nnz}), got {values.numel()}")
    if int(row_ptr[0]) != 0 or int(row_ptr[-1]) != nnz or bool((row_ptr.diff() < 0).any()):
        raise ValueError(f"row_ptr must be non-decreasing from 0 to nnz = {nnz}, got "
                         f"{int(row_ptr[0])} .. {int(row_ptr[-1])}")
    if nnz and not (0 <= int(col_idx.min()) and int(col_idx.max()) < cols):
        raise ValueError(f"col_idx must lie in [0, input + hidden = {cols}), got "
                         f"{int(col_idx.min())} .. {int(col_idx.max())}")


def sparse_lstm_step(x, h, c, row_ptr, col_idx, values, bias):
    """One LSTM step of one layer whose two weight matrices are one CSR matrix W = [W_ih | W_hh]
    (4*hidden, input + hidden), the products and the gates in one call (inference: no autograd).

    x: (batch, input), h and c: (batch, hidden), bias: (4*hidden,) (b_ih + b_hh), all float32;
    row_ptr: int32 (4*hidden + 1,); col_idx: uint8, int16 or int32 (nnz,); values: float32 or
    float16 (nnz,), computed in float32. Gate order i, f, g, o. Returns (h', c'), each (batch, hidden).
    """
    for name, t in (("x", x), ("h", h), ("c", c)):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.float32 or t.ndim != 2:
            described = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a 2-D float32 tensor, got {described}")
    if h.shape != c.shape or h.shape[0] != x.shape[0]:
        raise ValueError(f"h and c must be (batch={x.shape[0]}, hidden), got {tuple(h.shape)} and {tuple(c.shape)}")
    check_sparse_layer(row_ptr, col_idx, values, bias, x.shape[1], h.shape[1])
    devices = {t.device for t in (x, h, c, row_ptr, col_idx, values, bias)}
    if len(devices) > 1:
        raise ValueError(f"every argument must be on one device, got {sorted(map(str, devices))}")
    return sparse_lstm_step_op(*(t.contiguous() for t in (x, h, c, row_ptr, col_idx, values, bias)))


def sparse_layout(pattern: torch.Tensor) -> torch.Tensor:
    """The compressed layout of a grouped sparse weight, for ``sparse_lstm``, ``sparse_lstm_cell`` and
    ``sparse_linear``: pattern (groups, rows, cols) bool, True where a weight exists (a keep-mask).

    Returns int32 ``[row_ptr (groups*rows + 1) | col_ptr (groups*cols + 1) | col_idx (nnz) | row_idx (nnz)]``
    on the pattern's device: the entries by rows (CSR) and by columns (CSC), pointers counting entries
    from the first group's. Build it once per pattern (a prune event), not per call.
    """
    if not isinstance(pattern, torch.Tensor) or pattern.dtype != torch.bool or pattern.ndim != 3:
        described = f"{pattern.dtype} {tuple(pattern.shape)}" if isinstance(pattern, torch.Tensor) else type(pattern).__name__
        raise ValueError(f"pattern must be a 3-D bool tensor (groups, rows, cols), got {described}")
    if pattern.numel() >= 2**31:
        raise ValueError(f"pattern must have fewer than 2**31 elements (int32 indices), got {pattern.numel()}")
    groups, rows, cols = pattern.shape
    pointers = []
    for counts in (pattern.sum(2), pattern.sum(1)):  # entries per row, per column
        pointer = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=pattern.device)
        torch.cumsum(counts.flatten(), 0, out=pointer[1:])
        pointers.append(pointer)
    col_idx = pattern.nonzero()[:, 2]  # (group, row, col) in row order
    row_idx = pattern.transpose(1, 2).nonzero()[:, 2]  # (group, col, row) in column order
    return torch.cat([*pointers, col_idx, row_idx]).to(torch.int32)


def _check_layout(layout, name, weight):
    """layout must be an int32 1-D tensor on weight's device of the size a [G, R, K] weight's layout can have."""
    if not isinstance(layout, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (see sparse_layout), got {type(layout).__name__}")
    if layout.dtype != torch.int32 or layout.ndim != 1:
        raise ValueError(f"{name} must be a 1-D int32 tensor (see sparse_layout), got {layout.dtype} {tuple(layout.shape)}")
    if layout.device != weight.device:
        raise ValueError(f"{name} must be on the weights' device ({weight.device}), got {layout.device}")
    groups, rows, cols = weight.shape
    extra = layout.numel() - (groups * rows + 1) - (groups * cols + 1)
    if extra < 0 or extra % 2:
        raise ValueError(f"{name} does not fit a weight of shape {tuple(weight.shape)}: {layout.numel()} elements "
                         "(build it with sparse_layout from a pattern of that shape)")
    return layout.contiguous()


def _needs_backward(*tensors) -> bool:
    """Whether autograd will differentiate through the op: then it keeps what its backward reads
    (``save``), which inference skips. Under torch.compile the arrays are always kept."""
    if torch.compiler.is_compiling():
        return True
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def sparse_lstm(x_seq, h0, c0, w_ih, w_hh, bias, layout_ih, layout_hh):
    """T steps of one LSTM layer whose weights exist only at their layouts' entries (``sparse_layout`` of
    a keep-mask): the dense weights are read at the entries only and get gradients there only, so the
    cost follows the kept weights. Equals ``masked_lstm`` with the layouts' patterns as bool masks
    wherever the weights outside the patterns are finite (those are not read at all; a mask multiplies
    them, so a NaN there makes ``masked_lstm`` NaN).

    x_seq: (time, groups, batch, input), h0 and c0: (groups, batch, hidden), w_ih: (groups, 4*hidden,
    input), w_hh: (groups, 4*hidden, hidden), bias: (groups, 4*hidden), float32 or float64. Returns
    (y (time, groups, batch, hidden), (h_T, c_T)). CPU kernels; other devices run the reference twin.
    """
    _check_lstm_args(x_seq, h0, c0, w_ih, w_hh, bias, None, None, "x_seq", ("h0", "c0"))
    layout_ih, layout_hh = _check_layout(layout_ih, "layout_ih", w_ih), _check_layout(layout_hh, "layout_hh", w_hh)
    y, c_n, *_ = _sparse_seq_op(
        x_seq.contiguous(), h0.contiguous(), c0.contiguous(), w_ih.contiguous(), w_hh.contiguous(), bias.contiguous(),
        layout_ih, layout_hh, _needs_backward(x_seq, h0, c0, w_ih, w_hh, bias),
    )
    return y, (y[-1], c_n)


def sparse_lstm_cell(x, h, c, w_ih, w_hh, bias, layout_ih, layout_hh):
    """One step of ``sparse_lstm``: x (groups, batch, input), h and c (groups, batch, hidden) -> (h', c')."""
    _check_lstm_args(x, h, c, w_ih, w_hh, bias, None, None, "x", ("h", "c"))
    layout_ih, layout_hh = _check_layout(layout_ih, "layout_ih", w_ih), _check_layout(layout_hh, "layout_hh", w_hh)
    y, c_n, *_ = _sparse_seq_op(
        x.contiguous()[None], h.contiguous(), c.contiguous(), w_ih.contiguous(), w_hh.contiguous(), bias.contiguous(),
        layout_ih, layout_hh, _needs_backward(x, h, c, w_ih, w_hh, bias),
    )
    return y[0], c_n


def sparse_linear(x, weight, bias, layout):
    """G linear layers whose weights exist only at the layout's entries (``sparse_layout``), read and
    differentiated there only: x (..., groups, batch, in), weight (groups, out, in), bias (groups, out),
    float32 or float64 -> (..., groups, batch, out)."""
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if not isinstance(t, torch.Tensor) or t.dtype not in (torch.float32, torch.float64):
            described = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise TypeError(f"{name} must be a float32 or float64 tensor, got {described}")
        if t.dtype != x.dtype or t.device != x.device:
            raise ValueError(f"{name} must have the dtype and device of x ({x.dtype}, {x.device}), got {t.dtype}, {t.device}")
    if weight.ndim != 3 or bias.shape != weight.shape[:2]:
        raise ValueError(f"weight must be (groups, out, in) and bias (groups, out), got {tuple(weight.shape)} and "
                         f"{tuple(bias.shape)}")
    if x.ndim < 3 or x.shape[-3] != weight.shape[0] or x.shape[-1] != weight.shape[2]:
        raise ValueError(f"x must be (..., groups={weight.shape[0]}, batch, in={weight.shape[2]}), got {tuple(x.shape)}")
    layout = _check_layout(layout, "layout", weight)
    rows = x.reshape(-1, *x.shape[-3:])
    out = _sparse_linear_op(rows.contiguous(), weight.contiguous(), bias.contiguous(), layout)
    return out.view(*x.shape[:-1], weight.shape[1])


# ---- The instruction set of the CPU kernels (csrc/cpu/isa.h) ------------------------------------------------

CPU_ISA_ENV = "HAPRUNED_CPU_ISA"
CPU_ISAS = ("avx512", "avx2", "baseline")


def supported_cpu_isas() -> tuple:
    """The instruction sets the compiled CPU kernels can use on this CPU, widest first (empty without the
    compiled extension)."""
    if not HAS_EXTENSION:
        return ()
    from hapruned import _C

    return _C._supported_cpu_isas()


def cpu_isa():
    """The instruction set the compiled CPU kernels use now (``avx512``, ``avx2`` or ``baseline``; None
    without the extension). By default the widest the CPU has; ``set_cpu_isa`` or the environment
    variable HAPRUNED_CPU_ISA (read when hapruned.ops is imported) choose another. ATen's own products
    inside the dense ops follow ATen's setting (ATEN_CPU_CAPABILITY)."""
    if not HAS_EXTENSION:
        return None
    from hapruned import _C

    return _C._cpu_isa()


def set_cpu_isa(isa: str) -> None:
    """Run the compiled CPU kernels with instruction set ``isa``: one of ``supported_cpu_isas()``
    (``avx512``, ``avx2``, ``baseline``). Results agree across them within floating-point rounding."""
    supported = supported_cpu_isas()
    if not HAS_EXTENSION:
        raise RuntimeError("set_cpu_isa chooses the compiled kernels' instruction set, and hapruned._C is not available")
    if isa not in supported:
        lacking = f"; this CPU lacks {isa}" if isa in CPU_ISAS else ""
        raise ValueError(f"isa must be one of {', '.join(supported)}{lacking}, got {isa!r}")
    from hapruned import _C

    _C._set_cpu_isa(isa)


def _isa_from_environment() -> None:
    value = os.environ.get(CPU_ISA_ENV)
    if not value or not HAS_EXTENSION:
        return
    try:
        set_cpu_isa(value)
    except ValueError as error:
        raise ValueError(f"{CPU_ISA_ENV}: {error}") from None


_isa_from_environment()
