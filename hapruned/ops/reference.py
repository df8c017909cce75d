"""Pure-PyTorch twins of the compiled ops. They define what the kernels compute, serve as the
fallback on any device the build lacks, and are what the tests hold the kernels against."""

import torch


def prune_counts(sparsity, groups: int, size: int, device=None) -> torch.Tensor:
    """Weights to prune per group: ``round(p * size)`` (half to even), as int64 ``[groups]``."""
    p = torch.as_tensor(sparsity, dtype=torch.float64, device=device)
    if p.ndim == 0:
        p = p.expand(groups)
    if p.shape != (groups,):
        raise ValueError(f"sparsity must be a float or a tensor of shape [{groups}], got shape {tuple(p.shape)}")
    if not bool(((p >= 0) & (p <= 1)).all()):
        raise ValueError(f"sparsity must lie in [0, 1], got {p.tolist()}")
    return torch.round(p * size).to(torch.int64)


def reference_magnitude_prune_mask(weight: torch.Tensor, sparsity) -> torch.Tensor:
    """Keep-mask of the largest-magnitude weights of each group.

    weight: (groups, size). sparsity: float or (groups,). Returns bool (groups, size), True = kept,
    with exactly ``round(p * size)`` False per group; among equal magnitudes the lower flat index
    is pruned first.
    """
    groups, size = weight.shape
    return reference_keep_mask(weight, prune_counts(sparsity, groups, size, weight.device))


def reference_keep_mask(weight: torch.Tensor, n_prune: torch.Tensor) -> torch.Tensor:
    """weight: (groups, size), n_prune: int64 (groups,) -> bool (groups, size) with n_prune[g] False in
    row g, the smallest magnitudes, lower flat index first among equals (a stable sort's order); every
    NaN, of any payload or sign, ranks as one value above +inf (docs/design.md §3).

    NaNs never reach the sort, whose NaN order is the device's (CUDA's sort places a NaN with the sign
    bit set, which its ``abs`` may keep, below every number): a stable sort of the magnitudes with NaN
    as +inf, then a stable sort of that order by "is NaN"."""
    magnitude = weight.abs()
    nan = magnitude.isnan()
    order = torch.sort(magnitude.masked_fill(nan, float("inf")), dim=1, stable=True).indices
    order = order.gather(1, torch.sort(nan.gather(1, order).to(torch.uint8), dim=1, stable=True).indices)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(weight.shape[1], device=weight.device).expand_as(order))
    return rank >= n_prune[:, None]


def _masked(weight, mask):
    """weight * mask in the weight's dtype: the masking rule of every op and twin."""
    return weight if mask is None else weight * mask.to(weight.dtype)


def reference_masked_lstm_cell(x, h, c, w_ih, w_hh, bias, mask_ih=None, mask_hh=None):
    """One LSTM step for G independent groups, gate order i, f, g, o (as ``torch.nn.LSTMCell``).

    x: (groups, batch, input), h and c: (groups, batch, hidden), w_ih: (groups, 4*hidden, input),
    w_hh: (groups, 4*hidden, hidden), bias: (groups, 4*hidden), masks: like their weights (bool or
    float). Returns (h', c'), each (groups, batch, hidden).

    A mask multiplies its weight after conversion to the weight's dtype, whatever its values (0/1 or
    not, bool or float), so a NaN or an infinity in a pruned weight makes the output NaN.
    """
    w_ih, w_hh = _masked(w_ih, mask_ih), _masked(w_hh, mask_hh)
    gates = torch.baddbmm(bias.unsqueeze(1), x, w_ih.transpose(1, 2)) + torch.bmm(h, w_hh.transpose(1, 2))
    i, f, g, o = gates.chunk(4, dim=-1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    return h_new, c_new


def reference_masked_lstm(x, h0, c0, w_ih, w_hh, bias, mask_ih=None, mask_hh=None):
    """T steps of one layer: x (time, groups, batch, input), h0 and c0 (groups, batch, hidden) ->
    (y (time, groups, batch, hidden), (h_T, c_T)); the cell applied at each step."""
    h, c, outputs = h0, c0, []
    for x_t in x:
        h, c = reference_masked_lstm_cell(x_t, h, c, w_ih, w_hh, bias, mask_ih, mask_hh)
        outputs.append(h)
    return torch.stack(outputs), (h, c)


def reference_sparse_lstm_step(x, h, c, row_ptr, col_idx, values, bias):
    """One LSTM step of one layer whose weights W = [W_ih | W_hh] (4*hidden, input + hidden) are in CSR form
    (repeated entries of a row add up), computed as the dense cell; gate order i, f, g, o.

    x: (batch, input), h and c: (batch, hidden), bias: (4*hidden,), all float32; row_ptr: int32
    (4*hidden + 1,); col_idx: uint8, int16 or int32 (nnz,); values: float32 or float16 (nnz,),
    computed in float32. Returns (h', c'), each (batch, hidden).
    """
    inputs, hidden = x.shape[1], h.shape[1]
    rows = torch.repeat_interleave(torch.arange(4 * hidden, device=x.device), row_ptr.diff().long())
    weight = torch.zeros(4 * hidden, inputs + hidden, dtype=torch.float32, device=x.device)
    weight.index_put_((rows, col_idx.long()), values.float(), accumulate=True)
    h_new, c_new = reference_masked_lstm_cell(
        x[None], h[None], c[None], weight[None, :, :inputs], weight[None, :, inputs:], bias[None]
    )
    return h_new[0], c_new[0]


def layout_pattern(layout: torch.Tensor, shape) -> torch.Tensor:
    """The keep-pattern (bool, ``shape`` = (groups, rows, cols)) of a layout built by ``sparse_layout``:
    True at its entries (read from the row-ordered half)."""
    groups, rows, cols = shape
    row_ptr = layout[: groups * rows + 1].long()
    nnz = (layout.numel() - groups * rows - groups * cols - 2) // 2
    col_idx = layout[groups * rows + groups * cols + 2:][:nnz].long()
    flat_rows = torch.repeat_interleave(torch.arange(groups * rows, device=layout.device), row_ptr.diff())
    pattern = torch.zeros(groups * rows, cols, dtype=torch.bool, device=layout.device)
    pattern[flat_rows, col_idx] = True
    return pattern.view(groups, rows, cols)


def _on_pattern(weight, layout):
    """The weight where its layout has entries, 0 elsewhere: the sparse ops never read the others, so a
    NaN or an infinity there is not seen (unlike a mask, which multiplies)."""
    pattern = layout_pattern(layout, weight.shape)
    return torch.where(pattern, weight, torch.zeros((), dtype=weight.dtype, device=weight.device)), pattern


def reference_sparse_lstm(x, h0, c0, w_ih, w_hh, bias, layout_ih, layout_hh):
    """``masked_lstm`` whose weights exist only at their layouts' entries (``sparse_layout``): x (time,
    groups, batch, input), h0 and c0 (groups, batch, hidden) -> (y, (h_T, c_T))."""
    (w_ih, _), (w_hh, _) = _on_pattern(w_ih, layout_ih), _on_pattern(w_hh, layout_hh)
    return reference_masked_lstm(x, h0, c0, w_ih, w_hh, bias)


def reference_sparse_lstm_cell(x, h, c, w_ih, w_hh, bias, layout_ih, layout_hh):
    """One step of ``reference_sparse_lstm``: x (groups, batch, input) -> (h', c')."""
    _, (h_new, c_new) = reference_sparse_lstm(x[None], h, c, w_ih, w_hh, bias, layout_ih, layout_hh)
    return h_new, c_new


def reference_sparse_linear(x, weight, bias, layout):
    """Grouped linear layers whose weights exist only at the layout's entries: x (..., groups, batch,
    in), weight (groups, out, in), bias (groups, out) -> (..., groups, batch, out)."""
    weight, _ = _on_pattern(weight, layout)
    return torch.matmul(x, weight.transpose(-1, -2)) + bias.unsqueeze(-2)


# The explicit forward/backward pairs below have the signatures of the compiled ops
# (torch.ops.hapruned.*) and serve as their kernels on devices the build lacks.


def panel_shape(steps: int, batch: int):
    """How the sparse LSTM kernels lay ``steps`` steps of ``batch`` columns out (csrc/cpu/sparse_lstm_seq.cpp):
    (steps per panel, padded columns per panel, panels): about 128 columns per panel."""
    per_panel = 1
    if 0 < batch < 128 and steps > 1:
        per_panel = -(-steps // -(-steps * batch // 128))
    lines = -(-per_panel * batch // 16)  # rows an odd number of 16 elements apart, as the kernels lay them out
    return per_panel, (lines + 1 - lines % 2) * 16, -(-steps // per_panel)


def _to_panels(seq):
    """seq (time, groups, batch, features) -> (groups, panels, features, padded) as the kernels store it."""
    steps, groups, batch, features = seq.shape
    per_panel, padded, panels = panel_shape(steps, batch)
    seq = torch.cat([seq, seq.new_zeros(panels * per_panel - steps, groups, batch, features)])
    seq = seq.view(panels, per_panel, groups, batch, features).permute(2, 0, 4, 1, 3)
    seq = seq.reshape(groups, panels, features, per_panel * batch)
    return torch.nn.functional.pad(seq, (0, padded - per_panel * batch))


def _from_panels(panels, steps, batch):
    """The inverse of ``_to_panels``: (groups, panels, features, padded) -> (time, groups, batch, features)."""
    groups, count, features, _ = panels.shape
    per_panel = panel_shape(steps, batch)[0]
    seq = panels[..., : per_panel * batch].reshape(groups, count, features, per_panel, batch)
    seq = seq.permute(1, 3, 0, 4, 2).reshape(count * per_panel, groups, batch, features)
    return seq[:steps]


def reference_sparse_lstm_seq_forward(x, h0, c0, w_ih, w_hh, bias, layout_ih, layout_hh, save=True):
    """As the compiled ``sparse_lstm_seq``: -> (y, c_n, x_panels, h_panels, gates (groups, time, 4*hidden,
    batch), cs (groups, time + 1, hidden, batch)), the last four empty (no groups) without ``save``."""
    (w_ih, _), (w_hh, _) = _on_pattern(w_ih, layout_ih), _on_pattern(w_hh, layout_hh)
    y, cs, gates = reference_masked_lstm_seq_forward(x, h0, c0, w_ih, w_hh, bias)
    saved = (
        _to_panels(x),
        _to_panels(torch.cat([h0[None], y[:-1]])),
        gates.transpose(-1, -2).contiguous(),
        torch.cat([c0[None], cs]).permute(1, 0, 3, 2).contiguous(),
    )
    return (y, cs[-1]) + (saved if save else tuple(t[:0] for t in saved))


def reference_sparse_lstm_seq_backward(grad_y, grad_c_n, w_ih, w_hh, layout_ih, layout_hh, x_panels, h_panels, gates, cs,
                                       input_grad=True):
    """As the compiled ``sparse_lstm_seq_backward`` -> (grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias)."""
    steps, _, batch, _ = grad_y.shape
    (w_ih, pattern_ih), (w_hh, pattern_hh) = _on_pattern(w_ih, layout_ih), _on_pattern(w_hh, layout_hh)
    x = _from_panels(x_panels, steps, batch)
    hs = _from_panels(h_panels, steps, batch)  # h0, y[0], ..., y[T-2]
    states = cs.permute(1, 0, 3, 2)  # c0, c_1, ..., c_T
    y = torch.cat([hs[1:], hs[:1]])  # y[T-1] is not read by the backward
    grad_cs = torch.zeros_like(grad_y)
    if grad_c_n is not None:
        grad_cs[-1] = grad_c_n
    grads = reference_masked_lstm_seq_backward(grad_y, grad_cs, x, hs[0], states[0], w_ih, w_hh, pattern_ih,
                                               pattern_hh, y, states[1:], gates.transpose(-1, -2), input_grad)
    zero = torch.zeros((), dtype=grad_y.dtype, device=grad_y.device)
    return grads[:3] + (torch.where(pattern_ih, grads[3], zero), torch.where(pattern_hh, grads[4], zero), grads[5])


def reference_sparse_linear_backward(grad_out, x, weight, layout):
    """As the compiled ``sparse_linear_backward`` -> (grad_x, grad_weight, grad_bias); x (rows, groups, batch, in)."""
    weight, pattern = _on_pattern(weight, layout)
    grad_weight = torch.where(pattern, torch.einsum("lgbr,lgbk->grk", grad_out, x), 0)
    return torch.matmul(grad_out, weight), grad_weight, grad_out.sum((0, 2))


def reference_masked_lstm_cell_forward(x, h, c, w_ih, w_hh, bias, mask_ih=None, mask_hh=None):
    """As ``masked_lstm_cell``, also returning the activated gates (groups, batch, 4*hidden) for backward."""
    pre = torch.baddbmm(bias.unsqueeze(1), x, _masked(w_ih, mask_ih).transpose(1, 2))
    pre = pre + torch.bmm(h, _masked(w_hh, mask_hh).transpose(1, 2))
    i, f, g, o = pre.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c_new = f * c + i * g
    return o * torch.tanh(c_new), c_new, torch.cat([i, f, g, o], dim=-1)


def reference_masked_lstm_cell_backward(grad_h, grad_c, x, h, c, w_ih, w_hh, mask_ih, mask_hh, gates, c_new,
                                        input_grad=True):
    """Gradients of one step -> (grad_x, grad_h, grad_c, grad_w_ih, grad_w_hh, grad_bias), weight grads masked;
    grad_x empty (0,) when not ``input_grad``."""
    i, f, g, o = gates.chunk(4, dim=-1)
    tanh_c = torch.tanh(c_new)
    dc = grad_c + grad_h * o * (1 - tanh_c * tanh_c)
    d_pre = torch.cat(
        [dc * g * i * (1 - i), dc * c * f * (1 - f), dc * i * (1 - g * g), grad_h * tanh_c * o * (1 - o)], dim=-1
    )
    grad_w_ih = torch.bmm(d_pre.transpose(1, 2), x)
    grad_w_hh = torch.bmm(d_pre.transpose(1, 2), h)
    return (
        torch.bmm(d_pre, _masked(w_ih, mask_ih)) if input_grad else x.new_empty(0),
        torch.bmm(d_pre, _masked(w_hh, mask_hh)),
        dc * f,
        _masked(grad_w_ih, mask_ih),
        _masked(grad_w_hh, mask_hh),
        d_pre.sum(1),
    )


def reference_masked_lstm_seq_forward(x, h0, c0, w_ih, w_hh, bias, mask_ih=None, mask_hh=None):
    """As ``masked_lstm``: -> (y, cs (time, groups, batch, hidden) cell states, gates (groups, time, batch, 4*hidden))."""
    h, c, ys, cs, gates = h0, c0, [], [], []
    for x_t in x:
        h, c, gates_t = reference_masked_lstm_cell_forward(x_t, h, c, w_ih, w_hh, bias, mask_ih, mask_hh)
        ys.append(h)
        cs.append(c)
        gates.append(gates_t)
    return torch.stack(ys), torch.stack(cs), torch.stack(gates, dim=1)


def reference_masked_lstm_seq_backward(grad_y, grad_cs, x, h0, c0, w_ih, w_hh, mask_ih, mask_hh, y, cs, gates,
                                       input_grad=True):
    """Backpropagation through the T steps -> (grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias);
    grad_x empty (0,) when not ``input_grad``."""
    grad_h, grad_c = torch.zeros_like(h0), torch.zeros_like(c0)
    grad_x = torch.empty_like(x)
    grad_w_ih, grad_w_hh = torch.zeros_like(w_ih), torch.zeros_like(w_hh)
    grad_bias = torch.zeros(w_ih.shape[:2], dtype=x.dtype, device=x.device)
    for t in range(x.shape[0] - 1, -1, -1):
        h_prev, c_prev = (h0, c0) if t == 0 else (y[t - 1], cs[t - 1])
        grads = reference_masked_lstm_cell_backward(
            grad_y[t] + grad_h, grad_cs[t] + grad_c, x[t], h_prev, c_prev, w_ih, w_hh, mask_ih, mask_hh, gates[:, t], cs[t]
        )
        grad_x[t], grad_h, grad_c = grads[:3]
        grad_w_ih += grads[3]
        grad_w_hh += grads[4]
        grad_bias += grads[5]
    return grad_x if input_grad else x.new_empty(0), grad_h, grad_c, grad_w_ih, grad_w_hh, grad_bias
