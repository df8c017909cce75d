"""TensorBoard logging of a training run (``hapruned train --tensorboard``), an optional extra:
``pip install "hapruned[tensorboard]"``.

The sink is called with every record the trainer writes to ``metrics.jsonl`` and writes each of its
numbers as a scalar at step ``iteration``: a number under its own name (``episode_reward``,
``eval_reward``, ``actor_loss``, ``entropy``, ``approx_kl``, ``agent_steps_per_s``, ...), a per-agent
list as ``NAME/agent_I`` (``sparsity``, ``target_sparsity``), a per-seed list as ``NAME/seed_S``
(``eval_reward_per_seed``, ``sparsity_per_seed/seed_S/agent_I``); plus the optimisers' learning rates
(``learning_rate/actor``, ``learning_rate/critic``). It only reads the records, so training computes
the same with or without it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

INSTALL_HINT = 'pip install "hapruned[tensorboard]"'


def check_available() -> None:
    """ImportError with the install command when the tensorboard package is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ImportError(f"TensorBoard logging needs the tensorboard package: {INSTALL_HINT}")


def scalars(record: dict, seeds) -> dict[str, float]:
    """The numbers of one ``metrics.jsonl`` record as TensorBoard tags (see the module docstring);
    ``seeds``: the run's training seeds, which name the entries of per-seed lists."""
    out = {}

    def add(tag, value, per_seed):
        if isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                name = f"seed_{seeds[index]}" if per_seed else f"agent_{index}"
                add(f"{tag}/{name}", item, per_seed=False)  # inside a seed's entry: its agents
        elif isinstance(value, (int, float)):
            out[tag] = float(value)

    for key, value in record.items():
        if key != "iteration":
            add(key, value, per_seed=key.endswith("_per_seed"))
    return out


class TensorBoardSink:
    """Writes the records of one run to TensorBoard event files in ``log_dir`` (created on the first record).

    A resumed run rewrites the iterations after its checkpoint; the writer then starts with ``purge_step``
    at the first record it gets, so TensorBoard drops what an interrupted run had written from there on.
    """

    def __init__(self, log_dir, config):
        check_available()
        self.log_dir = Path(log_dir)
        self.seeds = list(config.seed_list)
        self.learning_rates = {"learning_rate/actor": config.actor_lr}
        if config.algo != "dqn":  # DQN has one network, trained at actor_lr
            self.learning_rates["learning_rate/critic"] = config.critic_lr
        self.writer = None

    def __call__(self, record: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        step = int(record["iteration"])
        if self.writer is None:
            self.writer = SummaryWriter(str(self.log_dir), purge_step=step)
        for tag, value in {**scalars(record, self.seeds), **self.learning_rates}.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()  # one record per iteration: a watching TensorBoard sees it at once

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
