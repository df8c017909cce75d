"""The ``torch.ops.hapruned`` operators: fake kernels, autograd, fallbacks, and the typed wrappers.

The schemas live in C++ (csrc/ops.cpp) with the CPU and CUDA kernels. Without the compiled extension
the same schemas are defined here. Either way the pure-PyTorch twins are registered for
CompositeExplicitAutograd, so they serve every device that has no kernel of its own.
"""

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
        " Tensor? mask_hh, Tensor gates, Tensor c_new) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
    "masked_lstm_seq": (
        "(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor bias, Tensor? mask_ih, Tensor? mask_hh)"
        " -> (Tensor, Tensor, Tensor)"
    ),
    "masked_lstm_seq_backward": (
        "(Tensor grad_y, Tensor grad_cs, Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? mask_ih,"
        " Tensor? mask_hh, Tensor y, Tensor cs, Tensor gates) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
    "sparse_lstm_step": (
        "(Tensor x, Tensor h, Tensor c, Tensor row_ptr, Tensor col_idx, Tensor values, Tensor bias) -> (Tensor, Tensor)"
    ),
}


_FALLBACKS = {
    "magnitude_prune_mask": reference.reference_keep_mask,
    "masked_lstm_cell": reference.reference_masked_lstm_cell_forward,
    "masked_lstm_cell_backward": reference.reference_masked_lstm_cell_backward,
    "masked_lstm_seq": reference.reference_masked_lstm_seq_forward,
    "masked_lstm_seq_backward": reference.reference_masked_lstm_seq_backward,
    "sparse_lstm_step": reference.reference_sparse_lstm_step,
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


# Fake kernels: output shapes for torch.compile and meta tensors.
@torch.library.register_fake("hapruned::magnitude_prune_mask")
def _(weight, n_prune):
    return torch.empty_like(weight, dtype=torch.bool)


@torch.library.register_fake("hapruned::masked_lstm_cell")
def _(x, h, c, w_ih, w_hh, bias, mask_ih, mask_hh):
    return torch.empty_like(h), torch.empty_like(c), h.new_empty(h.shape[0], h.shape[1], 4 * h.shape[2])


@torch.library.register_fake("hapruned::masked_lstm_cell_backward")
def _(grad_h, grad_c, x, h, c, w_ih, w_hh, mask_ih, mask_hh, gates, c_new):
    return tuple(torch.empty_like(t) for t in (x, h, c, w_ih, w_hh)) + (w_ih.new_empty(w_ih.shape[:2]),)


@torch.library.register_fake("hapruned::masked_lstm_seq")
def _(x, h0, c0, w_ih, w_hh, bias, mask_ih, mask_hh):
    steps, (groups, batch, hidden) = x.shape[0], h0.shape
    y = h0.new_empty(steps, groups, batch, hidden)
    return y, torch.empty_like(y), h0.new_empty(groups, steps, batch, 4 * hidden)


@torch.library.register_fake("hapruned::masked_lstm_seq_backward")
def _(grad_y, grad_cs, x, h0, c0, w_ih, w_hh, mask_ih, mask_hh, y, cs, gates):
    return tuple(torch.empty_like(t) for t in (x, h0, c0, w_ih, w_hh)) + (w_ih.new_empty(w_ih.shape[:2]),)


@torch.library.register_fake("hapruned::sparse_lstm_step")
def _(x, h, c, row_ptr, col_idx, values, bias):
    return torch.empty_like(h), torch.empty_like(c)


# Autograd: the backward ops. Masks get no gradient; double backward is not supported.
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
    grads = _cell_backward_op(grad_h, grad_c, x, h, c, w_ih, w_hh, mask_ih, mask_hh, gates, c_new)
    return grads + (None, None)


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
    grads = _seq_backward_op(grad_y, grad_cs, x, h0, c0, w_ih, w_hh, mask_ih, mask_hh, y, cs, gates)
    return grads + (None, None)


torch.library.register_autograd("hapruned::masked_lstm_cell", _cell_backward, setup_context=_setup_cell)
torch.library.register_autograd("hapruned::masked_lstm_seq", _seq_backward, setup_context=_setup_seq)


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
