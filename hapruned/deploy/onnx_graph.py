"""Exported actors as one ONNX graph (opset 17) for ONNX Runtime: dense float32 weights, zeros included,
in the standard ``LSTM`` operator, one step per call.

Inputs: ``features`` (agents, batch, F), F the actors' ``input_size`` (K + 5, or K + 6 with
``observe_snr``), ``h`` and ``c`` (agents, layers, batch, H), the state before the step (zeros at an
episode's start). Outputs: ``logits`` (agents, batch, K + 1) and the state after the step, ``h_out``
and ``c_out``. Agent axis order: the exported agents, as listed in the graph's metadata ``agents``.
Needs the ``onnx`` package (``pip install hapruned[onnx]``).
"""

from __future__ import annotations

import json

import numpy as np

from hapruned.deploy.hpz import ActorWeights
from hapruned.storage import replace_atomically

OPSET = 17
# ONNX's LSTM orders the gates i, o, f, c; hapruned (as torch) i, f, g, o with g = c.
_ONNX_GATE_ORDER = (0, 3, 1, 2)


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("exporting to ONNX needs the onnx package: pip install 'hapruned[onnx]' "
                          "(or pip install onnx)") from None
    return onnx


def actor_graph(metadata: dict, actors: list[ActorWeights]):
    """The ``onnx.ModelProto`` of ``actors`` (see the module docstring)."""
    onnx = _import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    arch = metadata["architecture"]
    F, H, L, A = arch["input_size"], arch["hidden_size"], arch["num_layers"], arch["n_actions"]
    nodes, initializers = [], []

    def constant(name: str, array: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.array(array, order="C"), name))  # keeps 0-d
        return name

    def node(op: str, inputs: list[str], outputs: list[str], **attributes) -> list[str]:
        nodes.append(helper.make_node(op, inputs, outputs, **attributes))
        return outputs

    def reorder(array: np.ndarray) -> np.ndarray:
        return np.concatenate([array[g * H:(g + 1) * H] for g in _ONNX_GATE_ORDER])

    axis0 = constant("axis0", np.array([0], dtype=np.int64))
    logits, h_out, c_out = [], [], []
    for a, actor in enumerate(actors):
        index = constant(f"agent{a}_index", np.array(a, dtype=np.int64))
        (x,) = node("Gather", ["features", index], [f"a{a}_x"], axis=0)
        (x,) = node("Unsqueeze", [x, axis0], [f"a{a}_x_seq"])  # (1, batch, F): a sequence of one step
        (h_a,) = node("Gather", ["h", index], [f"a{a}_h"], axis=0)
        (c_a,) = node("Gather", ["c", index], [f"a{a}_c"], axis=0)
        layer_h, layer_c = [], []
        for k, matrix in enumerate(actor.layers):
            in_k = F if k == 0 else H
            weight = reorder(matrix.to_dense())
            bias = np.concatenate([reorder(matrix.bias.astype(np.float32)), np.zeros(4 * H, dtype=np.float32)])
            layer_index = constant(f"a{a}_l{k}_index", np.array([k], dtype=np.int64))
            (h0,) = node("Gather", [h_a, layer_index], [f"a{a}_l{k}_h0"], axis=0)
            (c0,) = node("Gather", [c_a, layer_index], [f"a{a}_l{k}_c0"], axis=0)
            _, y_h, y_c = node(
                "LSTM",
                [x, constant(f"a{a}_l{k}_W", weight[None, :, :in_k]), constant(f"a{a}_l{k}_R", weight[None, :, in_k:]),
                 constant(f"a{a}_l{k}_B", bias[None]), "", h0, c0],
                [f"a{a}_l{k}_y", f"a{a}_l{k}_h", f"a{a}_l{k}_c"],
                hidden_size=H,
            )
            layer_h.append(y_h)
            layer_c.append(y_c)
            x = y_h  # (1, batch, H): the next layer's one-step sequence
        (top,) = node("Squeeze", [x, axis0], [f"a{a}_top"])
        head = actor.head
        head_weight = constant(f"a{a}_head_W", head.to_dense())
        head_bias = constant(f"a{a}_head_b", head.bias.astype(np.float32))
        (out,) = node("Gemm", [top, head_weight, head_bias], [f"a{a}_logits"], transB=1)
        logits.append(node("Unsqueeze", [out, axis0], [f"a{a}_logits_1"])[0])
        for name, states, outputs in (("h", layer_h, h_out), ("c", layer_c, c_out)):
            (stacked,) = node("Concat", states, [f"a{a}_{name}_out"], axis=0)  # (layers, batch, H)
            outputs.append(node("Unsqueeze", [stacked, axis0], [f"a{a}_{name}_out_1"])[0])
    node("Concat", logits, ["logits"], axis=0)
    node("Concat", h_out, ["h_out"], axis=0)
    node("Concat", c_out, ["c_out"], axis=0)

    n = len(actors)
    state = [n, L, "batch", H]
    graph = helper.make_graph(
        nodes, "hapruned_actors",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [n, "batch", F]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, state),
         helper.make_tensor_value_info("c", TensorProto.FLOAT, state)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [n, "batch", A]),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, state),
         helper.make_tensor_value_info("c_out", TensorProto.FLOAT, state)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hapruned")
    helper.set_model_props(model, {"agents": json.dumps([actor.agent for actor in actors]),
                                   "metadata": json.dumps(metadata)})
    onnx.checker.check_model(model)
    return model


def write_onnx(path, metadata: dict, actors: list[ActorWeights]) -> int:
    """Write the graph of ``actors`` to ``path``, atomically; returns the file's size in bytes."""
    data = actor_graph(metadata, actors).SerializeToString()
    replace_atomically(path, lambda f: f.write(data))
    return len(data)
