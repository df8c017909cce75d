"""An exported actor on a CPU edge device: file size and the step at batch 1.

Run: python -m pytest benchmarks/test_bench_deploy.py --benchmark-group-by=group
The actor is the paper's (2 LSTM layers x 128, K = 5 channels, 10 input features, 6 actions) with
random weights magnitude-pruned to 95% as one agent's weights are. Each group holds the sparse path
and its baselines, so the ratios come from one run; torch runs on one thread.

- "actor file size": the .hpz file (float32, float16) against torch.save of the dense actor's
  state_dict; the sizes are in extra_info and asserted (<= 1/10 in float32, <= 1/15 in float16).
- "actor step torch B=1": one step of both layers and the head. SparseActor as a user steps it (NumPy
  features in, float32 and float16 files) against a dense nn.LSTM + nn.Linear; the sparse op against
  the fused masked op at G = 1 with bool masks, both called as raw ops on fixed input tensors.
- "actor step numpy B=1": NumpyActor against the same step with dense NumPy matrices.
"""

import io

import numpy as np
import pytest
import torch

from hapruned import ops
from hapruned.algos import TrainConfig
from hapruned.algos.models import GroupedActor
from hapruned.deploy import observation_features
from hapruned.deploy.actor import SparseActor, dense_torch_actor
from hapruned.deploy.export import actor_metadata, actor_weights, write_actors
from hapruned.deploy.hpz import ActorWeights
from hapruned.deploy.numpy_actor import NumpyActor, gate_scales, lstm_gates

HIDDEN, LAYERS, CHANNELS, SPARSITY = 128, 2, 5, 0.95

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pruned():
    """(grouped actor with its bool masks, metadata, the exported float32 weights) of one 95% actor."""
    torch.manual_seed(0)
    actor = GroupedActor(1, CHANNELS + 5, HIDDEN, LAYERS, CHANNELS + 1)
    weights = [actor.get_parameter(name) for name in actor.prunable_names]
    keep = ops.magnitude_prune_mask(torch.cat([w.detach().flatten(1) for w in weights], 1), SPARSITY)
    for name, w, k in zip(actor.prunable_names, weights, keep.split([w[0].numel() for w in weights], 1)):
        owner, _, attr = name.rpartition(".")
        setattr(actor.get_submodule(owner), f"{attr}_mask", k.view_as(w))
    metadata = actor_metadata(TrainConfig(n_channels=CHANNELS), seed=0, iteration=None)
    return actor, metadata, actor_weights(actor.state_dict(), {0: 0}, LAYERS)[0]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_file_size(benchmark, pruned, tmp_path, dtype):
    benchmark.group = "actor file size"
    _, metadata, weights = pruned
    lstm, head = dense_torch_actor(weights, metadata)
    buffer = io.BytesIO()
    torch.save({"lstm": lstm.state_dict(), "head": head.state_dict()}, buffer)
    dense = buffer.getbuffer().nbytes
    size = benchmark.pedantic(write_actors, (tmp_path / "actor.hpz", metadata, [weights], dtype), rounds=3)
    benchmark.extra_info.update({"hpz_bytes": size, "dense_torch_save_bytes": dense, "ratio": dense / size})
    print(f"\n{dtype}: {size} bytes, torch.save of the dense actor {dense} bytes: 1/{dense / size:.1f}")
    assert size <= dense / (10 if dtype == "float32" else 15)


def _features():
    return observation_features(2, 1, CHANNELS)  # a transmission on channel 2 that got an ACK


def _op_step(layer_op, layers, head_weight, head_bias, groups=()):
    """Both layers with ``layer_op(x, h, c, *layer)`` -> (h, c, ...) and the head, on fixed input tensors;
    ``groups=(1,)`` gives every tensor the leading group axis of the grouped op."""
    h = [torch.zeros(*groups, 1, HIDDEN) for _ in range(LAYERS)]
    c = [torch.zeros(*groups, 1, HIDDEN) for _ in range(LAYERS)]
    x0 = torch.from_numpy(_features()).view(*groups, 1, -1)
    head_weight_t = head_weight.T.contiguous()

    def step():
        x = x0
        for k, layer in enumerate(layers):
            h[k], c[k] = layer_op(x, h[k], c[k], *layer)[:2]
            x = h[k]
        return torch.addmm(head_bias, x.view(1, HIDDEN), head_weight_t)

    return step


def _masked_op_step(actor):
    """The fused masked op at G = 1 (the grouped tensors of one agent, bool masks)."""
    lstm, head = actor.lstm, actor.head
    layers = [tuple(getattr(lstm, f"{name}_l{k}").detach() for name in ("weight_ih", "weight_hh", "bias"))
              + (getattr(lstm, f"weight_ih_l{k}_mask"), getattr(lstm, f"weight_hh_l{k}_mask")) for k in range(LAYERS)]
    return _op_step(torch.ops.hapruned.masked_lstm_cell.default, layers, (head.weight * head.weight_mask)[0].detach(),
                    head.bias[0].detach(), groups=(1,))


def _sparse_op_step(weights):
    """The sparse op on the actor's CSR layers, with the same scaffolding as ``_masked_op_step``."""
    layers = [(torch.from_numpy(m.row_ptr.astype(np.int32)), torch.from_numpy(m.col_idx.copy()),
               torch.from_numpy(m.values.copy()), torch.from_numpy(m.bias.copy())) for m in weights.layers]
    return _op_step(torch.ops.hapruned.sparse_lstm_step.default, layers, torch.from_numpy(weights.head.to_dense()),
                    torch.from_numpy(weights.head.bias.copy()))


def _dense_torch_step(weights, metadata):
    lstm, head = dense_torch_actor(weights, metadata)
    x = torch.from_numpy(_features()).view(1, 1, -1)
    state = [None]

    def step():
        y, state[0] = lstm(x, state[0])
        return head(y)

    return step


def _dense_numpy_step(weights):
    """The NumPy path's step with dense matrices: one matrix-vector product per layer."""
    scale, offset = gate_scales(HIDDEN)
    layers = [(m.to_dense() * scale[:, None], m.bias.astype(np.float32) * scale) for m in weights.layers]
    head_weight, head_bias = weights.head.to_dense(), weights.head.bias.astype(np.float32)
    h = [np.zeros((1, HIDDEN), np.float32) for _ in range(LAYERS)]
    c = [np.zeros((1, HIDDEN), np.float32) for _ in range(LAYERS)]
    x0 = _features()[None]

    def step():
        x = x0
        for k, (w, b) in enumerate(layers):
            h[k], c[k] = lstm_gates(np.concatenate([x, h[k]], axis=1) @ w.T + b, c[k], scale, offset)
            x = h[k]
        return x @ head_weight.T + head_bias

    return step


TORCH_KINDS = ["sparse_actor", "sparse_actor_float16", "sparse_op", "fused_masked_op_g1", "dense_torch_lstm"]


@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_step_torch(benchmark, pruned, kind):
    benchmark.group = "actor step torch B=1"
    actor, metadata, weights = pruned
    if kind.startswith("sparse_actor"):  # as a user steps it: NumPy features in, logits out
        dtype = "float16" if kind.endswith("float16") else "float32"
        sparse = SparseActor(ActorWeights(0, [m.astype(dtype) for m in weights.layers], weights.head), metadata)
        features = _features()
        step = lambda: sparse.logits(features)  # noqa: E731
    elif kind == "sparse_op":
        step = _sparse_op_step(weights)
    elif kind == "fused_masked_op_g1":
        step = _masked_op_step(actor)
    else:
        step = _dense_torch_step(weights, metadata)
    with torch.inference_mode():
        benchmark(step)


@pytest.mark.parametrize("kind", ["numpy_sparse", "numpy_dense"])
def test_step_numpy(benchmark, pruned, kind):
    benchmark.group = "actor step numpy B=1"
    _, metadata, weights = pruned
    if kind == "numpy_sparse":
        actor, features = NumpyActor(weights, metadata), _features()
        step = lambda: actor.logits(features)  # noqa: E731
    else:
        step = _dense_numpy_step(weights)
    benchmark(step)
