"""IAGC-PPO: grouped LSTM actors and a global critic trained with clipped PPO, actors pruned gradually."""

from hapruned.algos.config import TrainConfig
from hapruned.algos.ppo import IAGCPPO, compute_gae

__all__ = ["IAGCPPO", "TrainConfig", "compute_gae"]
