"""The DSA simulator: configuration, the batched numba environment, its plain NumPy reference and
the observation encoder. The PettingZoo adapter lives in ``hapruned.env.pettingzoo`` (optional
dependency, imported only there)."""

import importlib

# name -> module. Imported on first use, so that the NumPy-only encoder can be used where numba is absent.
_EXPORTS = {
    "BatchedDSAEnv": "hapruned.env.batched",
    "DSAConfig": "hapruned.env.config",
    "FEEDBACK_CODES": "hapruned.env.encoding",
    "ReferenceDSAEnv": "hapruned.env.reference",
    "encode_env_observations": "hapruned.env.encoding",
    "encode_observations": "hapruned.env.encoding",
    "observation_size": "hapruned.env.encoding",
    "snr_quantile": "hapruned.env.encoding",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hapruned.env' has no attribute {name!r}")
