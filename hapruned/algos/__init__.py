"""The learning algorithms: the IAGC actor-critics (PPO, plain AC, PaI) with actor pruning, and a
recurrent DQN with parameter sharing; ``hapruned.algos.trainer`` runs any of them."""

from hapruned.algos.config import ALGOS, TrainConfig
from hapruned.algos.dqn import RecurrentDQN
from hapruned.algos.ppo import IAGCPPO, compute_gae

__all__ = ["ALGOS", "IAGCPPO", "RecurrentDQN", "TrainConfig", "compute_gae"]
