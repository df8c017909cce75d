"""Modules that hold G independent copies of a layer as one tensor, so one op serves all groups
(agents, or seeds x agents). Every weight may carry a mask buffer ``<name>_mask`` (None = dense)
that the ops apply inside the kernel; biases are never masked.

``torch.nn.utils.prune`` works on these weights too (``custom_from_mask``, ``l1_unstructured``, ...):
it turns ``<name>`` into the parameter ``<name>_orig`` and the buffer ``<name>_mask``, which the
forward hands to the op as weight and mask (the product that prune's hook also computes is not
used), and ``prune.remove`` bakes the mask into ``<name>`` again.

Sparse compute (docs/design.md §4): on the CPU, with the compiled extension, a masked weight also gets
a compressed layout of its mask (``hapruned.ops.sparse_layout``), built by ``update_sparse_layouts``
when the mask is set: by assigning it (``module.weight_hh_l0_mask = mask``), by the pruner at each
prune event, and after ``load_state_dict``, ``.to()`` and copies. A layer whose masks are sparse
enough (``use_sparse``) then runs the sparse ops, which read and train its weights at the kept entries
only, with the results of the masked ops (within floating-point rounding). A mask changed in place
must be followed by ``update_sparse_layouts()``; until then (the mask's version counter tells) the
layer runs the masked ops. Masks that are not 0/1 (factors) and masks whose pruned weights are not
all finite (a NaN there makes the masked ops' outputs NaN) get no layout, so every layer computes what
the masked ops compute."""

import math

import torch
from torch import nn

from hapruned import ops
from hapruned._extension import HAS_EXTENSION
from hapruned.validation import check_integer

# The densities (kept fraction of a layer's weights) up to which the sparse ops are faster than the
# masked ones, by batch (columns per step; a batch between two entries takes the lower one's limit),
# for an LSTM layer and for a linear layer: measured with benchmarks/test_bench_sparse.py on the 2-core
# AMD EPYC host (AVX-512), G = 10, H = 128 (benchmarks/RESULTS.md).
SPARSE_LSTM_CROSSOVER = ((1, 0.0), (2, 0.3), (16, 0.3), (64, 0.3))  # at B = 1 the masked op always won
SPARSE_LINEAR_CROSSOVER = 0.5


def use_sparse(density: float, batch: int) -> bool:
    """Whether an LSTM layer whose masks keep ``density`` of its weights runs the sparse ops at ``batch``."""
    limit = SPARSE_LSTM_CROSSOVER[0][1]
    for smallest, crossover in SPARSE_LSTM_CROSSOVER:
        if batch >= smallest:
            limit = crossover
    return density <= limit


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


def _version(mask: torch.Tensor):
    """The mask's version counter (advanced by every in-place update), None where there is none."""
    try:
        return mask._version
    except RuntimeError:  # an inference tensor has none
        return None


class _SparseLayouts:
    """The compressed layouts of a module's masked weights (``weight_names``); see the module docstring."""

    weight_names = ()
    densest_layout = max(SPARSE_LINEAR_CROSSOVER, *(limit for _, limit in SPARSE_LSTM_CROSSOVER))

    def update_sparse_layouts(self) -> None:
        """Build the compressed layout of every masked weight from its current mask. Call it after
        changing a mask in place (assigning a mask, the pruner's events and ``load_state_dict`` call it)."""
        layouts = {}
        for name in self.weight_names:
            weight, mask = _weight_and_mask(self, name)
            pattern = self._keep_pattern(weight, mask)
            if pattern is None:
                continue
            density = float(pattern.float().mean())
            if density <= self.densest_layout:
                layouts[name] = (mask, _version(mask), ops.sparse_layout(pattern), density)
        self.__dict__["_sparse_layouts"] = layouts

    @torch.no_grad()
    def _keep_pattern(self, weight, mask):
        """The bool keep-pattern of a mask where the sparse ops compute what the masked ops do with it."""
        if mask is None or not HAS_EXTENSION or mask.device.type != "cpu" or _version(mask) is None:
            return None
        if mask.dtype != torch.bool:
            if not bool(((mask == 0) | (mask == 1)).all()):
                return None  # factors, not a keep/drop mask
            mask = mask != 0
        if not bool(torch.isfinite(self.per_group(weight).detach()[~mask]).all()):
            return None  # the masked ops give NaN there
        return mask

    def sparse_layout(self, name: str):
        """(layout, density) of weight ``name`` while its layout matches its mask, else None."""
        entry = self.__dict__.get("_sparse_layouts", {}).get(name)
        if entry is None or torch.compiler.is_compiling():
            return None
        built_from, version, layout, density = entry
        _, mask = _weight_and_mask(self, name)
        return (layout, density) if mask is built_from and _version(mask) == version else None

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name.endswith("_mask") and name[: -len("_mask")] in self.weight_names:
            self.update_sparse_layouts()

    def _apply(self, fn, *args, **kwargs):
        result = super()._apply(fn, *args, **kwargs)
        self.update_sparse_layouts()
        return result

    def __setstate__(self, state):
        super().__setstate__(state)
        self.update_sparse_layouts()

    def _register_layout_hooks(self) -> None:
        self.register_load_state_dict_post_hook(lambda module, _incompatible: module.update_sparse_layouts())


class GroupedLSTM(_SparseLayouts, _Shared, nn.Module):
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
        self.weight_names = tuple(f"weight_{kind}_l{k}" for k in range(num_layers) for kind in ("ih", "hh"))
        self._register_layout_hooks()

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
            sparse_ih, sparse_hh = self.sparse_layout(f"weight_ih_l{k}"), self.sparse_layout(f"weight_hh_l{k}")
            kept = None
            if sparse_ih and sparse_hh:  # the layer's density: both matrices together
                sizes = w_ih[0].numel(), w_hh[0].numel()
                kept = (sparse_ih[1] * sizes[0] + sparse_hh[1] * sizes[1]) / sum(sizes)
            if kept is not None and use_sparse(kept, x.shape[2]):
                layer_input, (h, c) = ops.sparse_lstm(layer_input, h, c, w_ih, w_hh, bias, sparse_ih[0], sparse_hh[0])
            else:
                layer_input, (h, c) = ops.masked_lstm(layer_input, h, c, w_ih, w_hh, bias, m_ih, m_hh)
            h_out.append(h)
            c_out.append(c)
        return layer_input, (torch.stack(h_out), torch.stack(c_out))


class GroupedLinear(_SparseLayouts, _Shared, nn.Module):
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
        self.weight_names = ("weight",)
        self._register_layout_hooks()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., groups, batch, in) -> (..., groups, batch, out)."""
        weight, mask = _weight_and_mask(self, "weight")
        weight, bias = self.per_group(weight), self.per_group(self.bias)
        sparse = self.sparse_layout("weight")
        if sparse is not None and sparse[1] <= SPARSE_LINEAR_CROSSOVER:
            return ops.sparse_linear(x, weight, bias, sparse[0])
        weight = weight if mask is None else weight * mask.to(weight.dtype)
        return torch.matmul(x, weight.transpose(-1, -2)) + bias.unsqueeze(-2)
