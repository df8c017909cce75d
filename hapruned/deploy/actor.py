"""Exported actors on torch: each LSTM layer step is one call of the sparse op
``hapruned::sparse_lstm_step`` on the file's CSR weights (float16 values stay float16 in memory)."""

from __future__ import annotations

import numpy as np
import torch

from hapruned.deploy.hpz import ActorWeights, ExportedActor, read_hpz
from hapruned.nn import sample_actions
from hapruned.ops.library import sparse_lstm_step_op


def _torch_index(col_idx: np.ndarray) -> torch.Tensor:
    """The file's unsigned column indices as a dtype the op reads: uint8 as is, wider ones signed."""
    if col_idx.dtype == np.uint8:
        return torch.from_numpy(col_idx.copy())
    fits_int16 = col_idx.size == 0 or int(col_idx.max()) <= np.iinfo(np.int16).max
    return torch.from_numpy(col_idx.astype(np.int16 if fits_int16 else np.int32))


class SparseActor(ExportedActor):
    """One agent's exported actor and its LSTM state, for B environments stepped together.

    ``reset(batch)`` zeroes the state; ``logits(features)`` takes the features of this step, (F,) when
    batch = 1 or (batch, F) with F = ``input_size`` (see ``hapruned.deploy.observation_features``),
    advances the state and returns the logits over the K + 1 actions, (K + 1,) or (batch, K + 1);
    ``act`` returns actions.
    """

    def __init__(self, weights: ActorWeights, metadata: dict):
        super().__init__(weights, metadata)
        # the layers as the op takes them (read_hpz checked them: SparseMatrix.check)
        self._layers = [(torch.from_numpy(matrix.row_ptr.astype(np.int32)), _torch_index(matrix.col_idx),
                         torch.from_numpy(matrix.values.copy()), torch.from_numpy(matrix.bias.astype(np.float32)))
                        for matrix in weights.layers]
        # H x (K + 1), dense: too small to pay for sparsity
        self._head_weight_t = torch.from_numpy(np.ascontiguousarray(weights.head.to_dense().T))
        self._head_bias = torch.from_numpy(weights.head.bias.astype(np.float32))
        self.reset()

    def _zero_state(self, batch: int) -> None:
        self._h = [torch.zeros(batch, self.hidden_size) for _ in range(self.num_layers)]
        self._c = [torch.zeros(batch, self.hidden_size) for _ in range(self.num_layers)]

    def logits(self, features) -> torch.Tensor:
        """One step: features (F,) or (batch, F), F = ``input_size`` -> logits (K + 1,) or (batch, K + 1)."""
        if isinstance(features, torch.Tensor):
            x = features.to(torch.float32)
        else:  # from_numpy shares the array: a few times faster than torch.as_tensor(..., dtype=...)
            x = torch.from_numpy(np.asarray(features, dtype=np.float32))
        single = self._one_environment(x.shape)
        x = (x.unsqueeze(0) if single else x).contiguous()
        for k, layer in enumerate(self._layers):
            self._h[k], self._c[k] = sparse_lstm_step_op(x, self._h[k], self._c[k], *layer)
            x = self._h[k]
        logits = torch.addmm(self._head_bias, x, self._head_weight_t)
        return logits[0] if single else logits

    def act(self, features, greedy: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """One step: ``sample_actions`` of the step's logits. Returns int64, () or (batch,)."""
        return sample_actions(self.logits(features), greedy, generator)


def load_actors(path) -> list[SparseActor]:
    """One ``SparseActor`` per agent of an ``.hpz`` file, in the file's order (``actor.agent`` is the
    agent's index in the run)."""
    metadata, actors = read_hpz(path)
    return [SparseActor(weights, metadata) for weights in actors]


def dense_torch_actor(weights: ActorWeights, metadata: dict) -> tuple[torch.nn.LSTM, torch.nn.Linear]:
    """The same actor as dense float32 torch modules, zeros included: ``nn.LSTM`` (``bias_ih`` the summed
    bias, ``bias_hh`` zero) and the head ``nn.Linear``; the baseline that ``deploy-bench`` compares with."""
    arch = metadata["architecture"]
    inputs, hidden = arch["input_size"], arch["hidden_size"]
    lstm = torch.nn.LSTM(inputs, hidden, arch["num_layers"])
    head = torch.nn.Linear(hidden, arch["n_actions"])
    with torch.no_grad():
        for k, matrix in enumerate(weights.layers):
            weight = torch.from_numpy(matrix.to_dense())
            in_k = inputs if k == 0 else hidden
            getattr(lstm, f"weight_ih_l{k}").copy_(weight[:, :in_k])
            getattr(lstm, f"weight_hh_l{k}").copy_(weight[:, in_k:])
            getattr(lstm, f"bias_ih_l{k}").copy_(torch.from_numpy(matrix.bias.astype(np.float32)))
            getattr(lstm, f"bias_hh_l{k}").zero_()
        head.weight.copy_(torch.from_numpy(weights.head.to_dense()))
        head.bias.copy_(torch.from_numpy(weights.head.bias.astype(np.float32)))
    return lstm, head
