"""GroupedLSTM and GroupedLinear against per-group torch.nn modules, with masks and gradients."""

import pytest
import torch
from torch.nn.utils import prune

from hapruned import ops
from hapruned.nn import GroupedLinear, GroupedLSTM, grouped


def _copy_group_to_lstm(module, group):
    """A torch.nn.LSTM holding group ``group`` of a GroupedLSTM (masks applied)."""
    lstm = torch.nn.LSTM(module.input_size, module.hidden_size, module.num_layers, dtype=torch.float64)
    with torch.no_grad():
        for k in range(module.num_layers):
            for kind in ("ih", "hh"):
                weight = getattr(module, f"weight_{kind}_l{k}")[group]
                mask = getattr(module, f"weight_{kind}_l{k}_mask")
                getattr(lstm, f"weight_{kind}_l{k}").copy_(weight if mask is None else weight * mask[group])
            getattr(lstm, f"bias_ih_l{k}").copy_(getattr(module, f"bias_l{k}")[group])
            getattr(lstm, f"bias_hh_l{k}").zero_()
    return lstm


def test_lstm_matches_torch(device):
    torch.manual_seed(0)
    module = GroupedLSTM(3, 5, 7, num_layers=2, dtype=torch.float64).to(device)
    module.weight_hh_l1_mask = ops.magnitude_prune_mask(module.weight_hh_l1.detach().flatten(1), 0.6).view_as(
        module.weight_hh_l1
    )
    x = torch.randn(6, 3, 4, 5, dtype=torch.float64, device=device)
    h0, c0 = (torch.randn(2, 3, 4, 7, dtype=torch.float64, device=device) for _ in range(2))
    y, (h, c) = module(x, (h0, c0))
    assert y.shape == (6, 3, 4, 7) and h.shape == c.shape == (2, 3, 4, 7)
    for g in range(3):
        lstm = _copy_group_to_lstm(module.cpu(), g).to(device)
        module.to(device)
        y_g, (h_g, c_g) = lstm(x[:, g], (h0[:, g].contiguous(), c0[:, g].contiguous()))
        torch.testing.assert_close(y[:, g], y_g)
        torch.testing.assert_close(h[:, g], h_g)
        torch.testing.assert_close(c[:, g], c_g)


def test_lstm_masked_weights_get_no_gradient_and_state_continues():
    torch.manual_seed(1)
    module = GroupedLSTM(2, 3, 4, num_layers=2)
    module.weight_ih_l0_mask = torch.rand_like(module.weight_ih_l0) > 0.5
    x = torch.randn(5, 2, 3, 3)
    y, _ = module(x)
    y.square().sum().backward()
    grad = module.weight_ih_l0.grad
    assert grad.abs().sum() > 0
    assert torch.all(grad[~module.weight_ih_l0_mask] == 0)
    # Running the sequence in two halves with the carried state gives the same outputs.
    with torch.no_grad():
        first, state = module(x[:2])
        second, _ = module(x[2:], state)
        torch.testing.assert_close(torch.cat([first, second]), module(x)[0])


def _reference_forward(module, x, weights):
    """The two-layer GroupedLSTM forward on the reference twin, with ``weights`` (name -> tensor)."""
    h, c = module.zero_state(x.shape[2])
    for k in range(module.num_layers):
        x, _ = ops.reference_masked_lstm(x, h[k], c[k], weights[f"weight_ih_l{k}"], weights[f"weight_hh_l{k}"],
                                          getattr(module, f"bias_l{k}"))
    return x


@pytest.mark.parametrize("method", ["custom_from_mask", "l1_unstructured"])
def test_lstm_under_torch_nn_utils_prune(method, monkeypatch):
    """prune's weight_orig + weight_mask reach the fused op as weight and mask; prune.remove bakes them."""
    torch.manual_seed(3)
    module = GroupedLSTM(3, 4, 6, num_layers=2, dtype=torch.float64)
    if method == "custom_from_mask":
        prune.custom_from_mask(module, "weight_hh_l0", torch.rand_like(module.weight_hh_l0) > 0.4)
    else:
        prune.l1_unstructured(module, "weight_ih_l1", amount=0.7)
    name = "weight_hh_l0" if method == "custom_from_mask" else "weight_ih_l1"
    orig, mask = getattr(module, name + "_orig"), getattr(module, name + "_mask")
    assert mask.dtype == torch.float64 and 0 < mask.sum() < mask.numel()
    calls, masked_lstm = [], ops.masked_lstm

    def spy(x, h0, c0, w_ih, w_hh, bias, mask_ih=None, mask_hh=None):
        calls.append((w_ih, w_hh, mask_ih, mask_hh))
        return masked_lstm(x, h0, c0, w_ih, w_hh, bias, mask_ih, mask_hh)

    monkeypatch.setattr(grouped.ops, "masked_lstm", spy)
    x = torch.randn(5, 3, 2, 4, dtype=torch.float64)
    y, _ = module(x)
    layer, kind = int(name[-1]), name.split("_")[1]
    passed_weight, passed_mask = calls[layer][:2][kind == "hh"], calls[layer][2:][kind == "hh"]
    assert passed_weight is orig and passed_mask is mask
    weights = {n: getattr(module, n) for n in ("weight_ih_l0", "weight_hh_l0", "weight_ih_l1", "weight_hh_l1")}
    weights[name] = orig.detach() * mask
    torch.testing.assert_close(y, _reference_forward(module, x, weights))
    y.square().sum().backward()
    assert orig.grad.abs().sum() > 0 and torch.all(orig.grad[mask == 0] == 0)

    prune.remove(module, name)
    baked = getattr(module, name)
    assert isinstance(baked, torch.nn.Parameter) and torch.equal(baked, weights[name])
    assert getattr(module, name + "_mask", None) is None
    torch.testing.assert_close(module(x)[0], y)


def test_lstm_zero_state_and_bad_input():
    module = GroupedLSTM(2, 3, 4, num_layers=2)
    h, c = module.zero_state(5)
    assert h.shape == c.shape == (2, 2, 5, 4) and not h.any() and not c.any()
    with pytest.raises(ValueError, match="x must have shape"):
        module(torch.randn(5, 3, 1, 3))
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        GroupedLSTM(2, 3, 0)


def test_linear_matches_per_group():
    torch.manual_seed(2)
    module = GroupedLinear(3, 4, 5)
    module.weight_mask = torch.rand_like(module.weight) > 0.3
    x = torch.randn(7, 3, 2, 4)
    out = module(x)
    for g in range(3):
        expected = torch.nn.functional.linear(x[:, g], module.weight[g] * module.weight_mask[g], module.bias[g])
        torch.testing.assert_close(out[:, g], expected)
