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
    n_prune = prune_counts(sparsity, groups, size, weight.device)
    order = torch.sort(weight.abs(), dim=1, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(size, device=weight.device).expand(groups, size))
    return rank >= n_prune[:, None]


def reference_masked_lstm_cell(x, h, c, w_ih, w_hh, bias, mask_ih=None, mask_hh=None):
    """One LSTM step for G independent groups, gate order i, f, g, o (as ``torch.nn.LSTMCell``).

    x: (groups, batch, input), h and c: (groups, batch, hidden), w_ih: (groups, 4*hidden, input),
    w_hh: (groups, 4*hidden, hidden), bias: (groups, 4*hidden), masks: like their weights (bool or
    float). Returns (h', c'), each (groups, batch, hidden).
    """
    if mask_ih is not None:
        w_ih = w_ih * mask_ih
    if mask_hh is not None:
        w_hh = w_hh * mask_hh
    gates = torch.baddbmm(bias.unsqueeze(1), x, w_ih.transpose(1, 2)) + torch.bmm(h, w_hh.transpose(1, 2))
    i, f, g, o = gates.chunk(4, dim=-1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    return h_new, c_new
