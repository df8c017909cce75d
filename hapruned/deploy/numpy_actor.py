"""Exported actors on NumPy alone, for devices where torch does not fit: this module imports neither
torch nor numba. Same interface and logits as ``hapruned.deploy.SparseActor``, computed in float32."""

from __future__ import annotations

import numpy as np

from hapruned.deploy.hpz import ActorWeights, ExportedActor, SparseMatrix, read_hpz


def gate_scales(hidden: int) -> tuple[np.ndarray, np.ndarray]:
    """All four gate activations with one tanh, since sigmoid(x) = 0.5 * tanh(x / 2) + 0.5: the rows of
    the i, f and o gates (and their biases) are scaled by ``scale`` (0.5; 1 for g) once, at load, and
    the activation of a scaled pre-activation p is ``scale * tanh(p) + offset`` (offset 0.5; 0 for g).
    Returns (scale, offset), each (4 * hidden,) float32."""
    g_rows = np.zeros(4 * hidden, dtype=bool)
    g_rows[2 * hidden:3 * hidden] = True
    return np.where(g_rows, 1, 0.5).astype(np.float32), np.where(g_rows, 0, 0.5).astype(np.float32)


def lstm_gates(scaled_pre: np.ndarray, c: np.ndarray, scale: np.ndarray, offset: np.ndarray):
    """(h', c') from the pre-activations (batch, 4H) with the bias, gate order i, f, g, o, scaled as
    ``gate_scales`` gives, and c (batch, H)."""
    i, f, g, o = np.split(np.tanh(scaled_pre) * scale + offset, 4, axis=1)
    c = f * c + i * g
    return o * np.tanh(c), c


class _SparseLayer:
    """One LSTM layer's CSR weights W = [W_ih | W_hh] laid out for NumPy: each row's sum is one segment of
    np.add.reduceat, so every row needs an entry (an empty row gets an explicit zero; reduceat would give
    it its neighbour's first entry), and the i, f, o rows are scaled as ``gate_scales`` says."""

    def __init__(self, matrix: SparseMatrix):
        rows = matrix.shape[0]
        self.scale, self.offset = gate_scales(rows // 4)
        row_of = np.repeat(np.arange(rows), np.diff(matrix.row_ptr.astype(np.intp)))
        empty = np.setdiff1d(np.arange(rows), row_of)
        order = np.argsort(np.concatenate([row_of, empty]), kind="stable")
        row_of = np.concatenate([row_of, empty])[order]
        self.col_idx = np.concatenate([matrix.col_idx.astype(np.intp), np.zeros(empty.size, np.intp)])[order]
        values = np.concatenate([matrix.values.astype(np.float32), np.zeros(empty.size, np.float32)])[order]
        self.values = values * self.scale[row_of]
        self.starts = np.searchsorted(row_of, np.arange(rows))
        self.bias = matrix.bias.astype(np.float32) * self.scale

    def step(self, x: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if x.shape[0] == 1:  # one environment: gathers from a 1-D array take half the time of 2-D ones
            pre = np.add.reduceat(np.concatenate([x[0], h[0]])[self.col_idx] * self.values, self.starts)[None]
        else:
            pre = np.add.reduceat(np.concatenate([x, h], axis=1)[:, self.col_idx] * self.values, self.starts, axis=1)
        pre += self.bias
        return lstm_gates(pre, c, self.scale, self.offset)


class NumpyActor(ExportedActor):
    """One agent's exported actor and its LSTM state on NumPy; the interface of ``SparseActor``, with
    NumPy arrays and a ``numpy.random.Generator`` for sampling."""

    def __init__(self, weights: ActorWeights, metadata: dict):
        super().__init__(weights, metadata)
        self._layers = [_SparseLayer(matrix) for matrix in weights.layers]
        self._head_weight = weights.head.to_dense()
        self._head_bias = weights.head.bias.astype(np.float32)
        self.reset()

    def _zero_state(self, batch: int) -> None:
        self._h = [np.zeros((batch, self.hidden_size), dtype=np.float32) for _ in range(self.num_layers)]
        self._c = [np.zeros((batch, self.hidden_size), dtype=np.float32) for _ in range(self.num_layers)]

    def logits(self, features) -> np.ndarray:
        """One step: features (F,) or (batch, F), F = ``input_size`` -> float32 logits (K + 1,) or
        (batch, K + 1)."""
        x = np.asarray(features, dtype=np.float32)
        single = self._one_environment(x.shape)
        if single:
            x = x[None]
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
