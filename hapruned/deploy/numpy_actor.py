"""Exported actors on NumPy alone, for devices where torch does not fit: this module imports neither
torch nor numba. Same interface and logits as ``hapruned.deploy.SparseActor``, computed in float32."""

from __future__ import annotations

import numpy as np

from hapruned.deploy.hpz import ActorWeights, SparseMatrix, read_hpz


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * np.tanh(0.5 * x) + 0.5  # never overflows, unlike 1 / (1 + exp(-x))


class _SparseLayer:
    """One LSTM layer's CSR weights W = [W_ih | W_hh] laid out for NumPy: row sums with np.add.reduceat
    over the rows that hold a nonzero (reduceat would give an empty row its neighbour's first entry)."""

    def __init__(self, matrix: SparseMatrix):
        self.col_idx = matrix.col_idx.astype(np.intp)
        self.values = matrix.values.astype(np.float32)
        self.bias = matrix.bias.astype(np.float32)
        row_ptr = matrix.row_ptr.astype(np.intp)
        self.filled = np.flatnonzero(np.diff(row_ptr) > 0)
        self.starts = row_ptr[self.filled]
        self.rows = matrix.shape[0]

    def step(self, x: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = np.concatenate([x, h], axis=1)
        pre = np.zeros((x.shape[0], self.rows), dtype=np.float32)
        if self.starts.size:
            pre[:, self.filled] = np.add.reduceat(z[:, self.col_idx] * self.values, self.starts, axis=1)
        pre += self.bias
        i, f, g, o = np.split(pre, 4, axis=1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        return _sigmoid(o) * np.tanh(c), c


class NumpyActor:
    """One agent's exported actor and its LSTM state on NumPy; the interface of ``SparseActor``, with
    NumPy arrays and a ``numpy.random.Generator`` for sampling."""

    def __init__(self, weights: ActorWeights, metadata: dict):
        arch = metadata["architecture"]
        self.agent = weights.agent
        self.n_channels = metadata["environment"]["n_channels"]
        self.input_size, self.hidden_size = arch["input_size"], arch["hidden_size"]
        self.num_layers, self.n_actions = arch["num_layers"], arch["n_actions"]
        self._layers = [_SparseLayer(matrix) for matrix in weights.layers]
        self._head_weight = weights.head.to_dense()
        self._head_bias = weights.head.bias.astype(np.float32)
        self.reset()

    def reset(self, batch: int = 1) -> None:
        """Start new episodes in ``batch`` environments: zero hidden and cell states."""
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
        self.batch = int(batch)
        self._h = [np.zeros((batch, self.hidden_size), dtype=np.float32) for _ in range(self.num_layers)]
        self._c = [np.zeros((batch, self.hidden_size), dtype=np.float32) for _ in range(self.num_layers)]

    def logits(self, features) -> np.ndarray:
        """One step: features (K + 5,) or (batch, K + 5) -> float32 logits (K + 1,) or (batch, K + 1)."""
        x = np.asarray(features, dtype=np.float32)
        single = x.ndim == 1
        if single:
            x = x[None]
        if x.shape != (self.batch, self.input_size):
            raise ValueError(f"features must be ({self.input_size},) for batch 1 or (batch={self.batch}, "
                             f"{self.input_size}), got {np.shape(features)}")
        for k, layer in enumerate(self._layers):
            self._h[k], self._c[k] = layer.step(x, self._h[k], self._c[k])
            x = self._h[k]
        logits = x @ self._head_weight.T + self._head_bias
        return logits[0] if single else logits

    def act(self, features, greedy: bool = False, rng: np.random.Generator | None = None) -> np.ndarray:
        """One step: the most likely action (``greedy``) or one drawn from the policy as ``SparseActor.act``
        draws it, with uniforms from ``rng`` (default: a fresh ``numpy.random.default_rng()``)."""
        logits = self.logits(features)
        if greedy:
            return logits.argmax(-1)
        rng = np.random.default_rng() if rng is None else rng
        probabilities = np.exp(logits - logits.max(-1, keepdims=True))
        cumulative = np.cumsum(probabilities / probabilities.sum(-1, keepdims=True), -1)
        u = rng.random(logits.shape[:-1] + (1,), dtype=np.float32)
        return np.minimum((cumulative < u).sum(-1), self.n_actions - 1)


def load_numpy_actors(path) -> list[NumpyActor]:
    """One ``NumpyActor`` per agent of an ``.hpz`` file, in the file's order."""
    metadata, actors = read_hpz(path)
    return [NumpyActor(weights, metadata) for weights in actors]
