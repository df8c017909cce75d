"""Deploying pruned actors: export a run's actors to a compact sparse ``.hpz`` file (or an ONNX graph)
and run them one step at a time, on torch with the sparse op (``load_actors`` -> ``SparseActor``) or
on NumPy alone (``hapruned.deploy.numpy_actor.load_numpy_actors`` -> ``NumpyActor``).

Importing this package imports neither torch nor numba; the torch parts load on first use.
"""

import importlib

import numpy as np

FORMATS = ("hpz", "onnx")  # what hapruned export writes

# name -> module, imported on first use
_EXPORTS = {
    "SparseActor": "hapruned.deploy.actor",
    "load_actors": "hapruned.deploy.actor",
    "export_actors": "hapruned.deploy.export",
    "ExportError": "hapruned.deploy.export",
    "HpzError": "hapruned.deploy.hpz",
    "read_hpz": "hapruned.deploy.hpz",
    "NumpyActor": "hapruned.deploy.numpy_actor",
    "load_numpy_actors": "hapruned.deploy.numpy_actor",
}
__all__ = sorted([*_EXPORTS, "FORMATS", "observation_features"])


def observation_features(last_action, last_feedback, n_channels: int, rate=None, snr_range=None) -> np.ndarray:
    """The actor input of a step from the user's last action (0 = idle, 1..K) and the feedback it got
    (0 idle, 1 ACK, -1 NACK, -2 busy; an episode starts from action 0, feedback 0), as in training:
    float32 (..., K + 5), one-hot(action, K + 1) followed by one-hot(feedback, 4). Scalars or arrays
    (one entry per environment).

    For actors trained with ``observe_snr`` (``actor.observe_snr``), also give ``rate``, the rate
    log2(1 + SNR) of the last transmission (0 when idle or blocked, and at an episode's start), and
    ``snr_range`` = (snr_low, snr_high) of training (``actor.snr_range``): the features are then
    (..., K + 6), the last one the feature ``hapruned.env.encoding.snr_quantile`` makes of the rate."""
    from hapruned.env.encoding import encode_observations, snr_quantile

    if (rate is None) != (snr_range is None):
        raise ValueError("rate and snr_range go together: give both (actors trained with observe_snr) or neither")
    arrays = np.broadcast_arrays(np.asarray(last_action), np.asarray(last_feedback),
                                 np.asarray(0.0 if rate is None else rate))
    feature = None if rate is None else snr_quantile(arrays[2], *snr_range)
    return encode_observations(np.stack(arrays[:2], axis=-1), n_channels, snr_feature=feature)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hapruned.deploy' has no attribute {name!r}")
