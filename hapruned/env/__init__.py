"""The DSA simulator: configuration, the batched numba environment, its plain NumPy reference and
the observation encoder. The PettingZoo adapter lives in ``hapruned.env.pettingzoo`` (optional
dependency, imported only there)."""

from hapruned.env.batched import BatchedDSAEnv
from hapruned.env.config import DSAConfig
from hapruned.env.encoding import FEEDBACK_CODES, encode_observations, observation_size
from hapruned.env.reference import ReferenceDSAEnv

__all__ = ["BatchedDSAEnv", "DSAConfig", "FEEDBACK_CODES", "ReferenceDSAEnv", "encode_observations", "observation_size"]
