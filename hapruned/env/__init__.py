"""The DSA simulator: configuration, the batched numba environment and the observation encoder."""

from hapruned.env.batched import BatchedDSAEnv
from hapruned.env.config import DSAConfig
from hapruned.env.encoding import FEEDBACK_CODES, encode_observations, observation_size

__all__ = ["BatchedDSAEnv", "DSAConfig", "FEEDBACK_CODES", "encode_observations", "observation_size"]
