"""Modules that hold G independent copies of a layer as one tensor, so one op serves all groups
(agents, or seeds x agents). Every weight may carry a mask buffer ``<name>_mask`` (None = dense)
that the ops apply inside the kernel; biases are never masked.

``torch.nn.utils.prune`` works on these weights too (``custom_from_mask``, ``l1_unstructured``, ...):
it turns ``<name>`` into the parameter ``<name>_orig`` and the buffer ``<name>_mask``, which the
forward hands to the op as weight and mask (the product that prune's hook also computes is not
used), and ``prune.remove`` bakes the mask into ``<name>`` again."""

import math

import torch
from torch import nn

from hapruned import ops
from hapruned.validation import check_integer


def _check_share(groups: int, share: int) -> None:
    if check_integer(share, "share", 1) and groups % share:
        raise ValueError(f"share must divide groups={groups}, got {share!r}")


class _Shared:
    """Weight sharing: each stored parameter slice serves ``share`` consecutive groups."""

    share = 1

    def per_group(self, param: torch.Tensor) -> torch.Tensor:
        """``param`` with one slice per group (shared slices repeated; the gradient of a shared slice is
        the sum of its groups' gradients)."""
        return param if self.share == 1 else param.repeat_interleave(self.share, dim=0)


def _weight_and_mask(module: nn.Module, name: str):
    """The weight ``name`` of ``module`` and its mask (None: dense), also under ``torch.nn.utils.prune``."""
    weight = getattr(module, name + "_orig", None)  # prune's parameter; `name` is then its product with the mask
    return (getattr(module, name) if weight is None else weight), getattr(module, name + "_mask", None)


class GroupedLSTM(_Shared, nn.Module):
    """``num_layers`` stacked LSTMs for each of ``groups`` groups.

    Parameters per layer k: ``weight_ih_l{k}`` (groups, 4H, in_k), ``weight_hh_l{k}`` (groups, 4H, H),
    ``bias_l{k}`` (groups, 4H) (the sum of ``nn.LSTM``'s two biases); gate order i, f, g, o.
    Buffers ``weight_ih_l{k}_mask`` / ``weight_hh_l{k}_mask``: None or a mask (groups, ...) of the weight.
    With ``share`` > 1, groups ``j*share .. (j+1)*share - 1`` share parameter slice j (parameters have
    ``groups // share`` slices; masks still one per group, so sharing groups can be distinct subnetworks).
    """

    def __init__(self, groups: int, input_size: int, hidden_size: int, num_layers: int = 1, device=None, dtype=None,
                 share: int = 1):
        super().__init__()
        for name, value in (("groups", groups), ("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        _check_share(groups, share)
        self.groups, self.input_size, self.hidden_size, self.num_layers = groups, input_size, hidden_size, num_layers
        self.share = share
        slices = groups // share
        factory = {"device": device, "dtype": dtype}
        bound = 1.0 / math.sqrt(hidden_size)
        for k in range(num_layers):
            in_k = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(slices, 4 * hidden_size, in_k, **factory).uniform_(-bound, bound)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(slices, 4 * hidden_size, hidden_size, **factory).uniform_(-bound, bound)))
            bias = torch.empty(2, slices, 4 * hidden_size, **factory).uniform_(-bound, bound).sum(0)
            self.register_parameter(f"bias_l{k}", nn.Parameter(bias))
            self.register_buffer(f"weight_ih_l{k}_mask", None)
            self.register_buffer(f"weight_hh_l{k}_mask", None)

    def zero_state(self, batch: int):
        """Zero (h, c), each (num_layers, groups, batch, hidden)."""
        bias = self.bias_l0  # never pruned, so always a parameter
        h = torch.zeros(self.num_layers, self.groups, batch, self.hidden_size, device=bias.device, dtype=bias.dtype)
        return h, h.clone()

    def forward(self, x: torch.Tensor, state=None):
        """x: (time, groups, batch, input) -> (y (time, groups, batch, hidden), (h, c) each (layers, groups, batch, hidden))."""
        if x.ndim != 4 or x.shape[1] != self.groups or x.shape[3] != self.input_size:
            raise ValueError(
                f"x must have shape (time, groups={self.groups}, batch, input={self.input_size}), got {tuple(x.shape)}"
            )
        h0, c0 = self.zero_state(x.shape[2]) if state is None else state
        layer_input, h_out, c_out = x, [], []
        for k in range(self.num_layers):
            h, c = h0[k], c0[k]
            (w_ih, m_ih), (w_hh, m_hh) = _weight_and_mask(self, f"weight_ih_l{k}"), _weight_and_mask(self, f"weight_hh_l{k}")
            w_ih, w_hh, bias = self.per_group(w_ih), self.per_group(w_hh), self.per_group(getattr(self, f"bias_l{k}"))
            layer_input, (h, c) = ops.masked_lstm(layer_input, h, c, w_ih, w_hh, bias, m_ih, m_hh)
            h_out.append(h)
            c_out.append(c)
        return layer_input, (torch.stack(h_out), torch.stack(c_out))


class GroupedLinear(_Shared, nn.Module):
    """``groups`` independent linear layers: weight (groups, out, in), bias (groups, out), optional
    ``weight_mask`` (groups, out, in); ``share`` as in :class:`GroupedLSTM`."""

    def __init__(self, groups: int, in_features: int, out_features: int, device=None, dtype=None, share: int = 1):
        super().__init__()
        _check_share(groups, share)
        self.share = share
        factory = {"device": device, "dtype": dtype}
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(groups // share, out_features, in_features, **factory).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(groups // share, out_features, **factory).uniform_(-bound, bound))
        self.register_buffer("weight_mask", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., groups, batch, in) -> (..., groups, batch, out)."""
        weight, mask = _weight_and_mask(self, "weight")
        weight = self.per_group(weight)
        weight = weight if mask is None else weight * mask.to(weight.dtype)
        return torch.matmul(x, weight.transpose(-1, -2)) + self.per_group(self.bias).unsqueeze(-2)
