"""Export the pruned actors of a training run: to an ``.hpz`` file (sparse, see ``hapruned.deploy.hpz``)
or to an ONNX graph (dense, see ``hapruned.deploy.onnx_graph``).

A run directory holds the actors of every training seed as groups ``seed_index * N + agent`` of
the grouped tensors in ``checkpoint.pt``; one seed is exported (by default the run's first). The
effective weight is the weight times its mask where the run pruned in ``masked`` mode (and in PaI runs,
whose agents share one weight set per seed under masks of their own); in ``regrow`` mode the zeros are
in the weights. The actors of the actor-critic learners (``algo`` ppo, ac, pai) are understood.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import hapruned
from hapruned.deploy import FORMATS
from hapruned.deploy.hpz import DTYPES, ActorWeights, SparseMatrix, write_hpz
from hapruned.env.encoding import FEEDBACK_CODES, observation_size

if TYPE_CHECKING:
    from hapruned.algos.config import TrainConfig


# The learners whose checkpoints hold a GroupedActor per seed.
ACTOR_ALGOS = ("ppo", "ac", "pai")


class ExportError(ValueError):
    """The run cannot be exported as asked (not a run directory, an algorithm or agent it lacks).
    ``argument``: the argument of ``export_actors`` at fault, if one is."""

    def __init__(self, message: str, argument: str | None = None):
        super().__init__(message)
        self.argument = argument


def read_run(run_dir) -> tuple[TrainConfig, dict]:
    """(config, checkpoint) of a run directory, the checkpoint checked against the run's ``config.json``
    (config and seeds) as a resume checks it; ExportError when it is not an actor-critic run, a file of it
    is damaged or the checkpoint belongs to another run."""
    from hapruned.algos.trainer import (CHECKPOINT_FILE, CONFIG_FILE, RunDirError, config_dict, load_config,
                                        read_config_file, read_run_checkpoint)

    run = Path(run_dir)
    for name in (CONFIG_FILE, CHECKPOINT_FILE):
        if not (run / name).is_file():
            raise ExportError(f"{str(run)!r} is not a finished or checkpointed run directory: it has no {name}",
                              "run_dir")
    try:
        algo = read_config_file(run).get("algo", "ppo")
        if algo not in ACTOR_ALGOS:
            raise ExportError(f"export reads the actors of actor-critic runs (algo {', '.join(ACTOR_ALGOS)}); the run "
                              f"in {str(run)!r} has algo={algo!r}")
        config = load_config(run)
        return config, read_run_checkpoint(run, config_dict(config))
    except RunDirError as err:
        raise ExportError(str(err), "run_dir") from None


def run_actors(run_dir, seed: int | None = None, agents=None) -> tuple[dict, list[ActorWeights]]:
    """The metadata and float32 sparse weights of the actors of ``agents`` (None: all) of training seed
    ``seed`` (None: the run's first) of a run directory."""
    train_config, checkpoint = read_run(run_dir)
    seeds, n_agents = list(train_config.seed_list), train_config.n_users
    seed = seeds[0] if seed is None else seed
    if seed not in seeds:
        raise ExportError(f"seed must be one of the run's training seeds {seeds}, got {seed}", "seed")
    agents = list(range(n_agents)) if agents is None else list(agents)
    bad = [a for a in agents if not 0 <= a < n_agents]
    if bad or not agents or len(set(agents)) != len(agents):
        raise ExportError(f"agents must be distinct indices in 0..{n_agents - 1} (the run has N = {n_agents}), "
                          f"got {agents}", "agents")
    state = checkpoint["algo"].get("actor") if isinstance(checkpoint["algo"], dict) else None
    first = seeds.index(seed) * n_agents
    try:
        share = n_agents if train_config.algo == "pai" else 1
        actors = actor_weights(state, {agent: first + agent for agent in agents}, train_config.num_layers, share)
    except KeyError as error:
        raise ExportError(f"the checkpoint of {str(run_dir)!r} holds no actor: {error.args[0]}") from None
    return actor_metadata(train_config, seed, checkpoint["iteration"]), actors


def actor_weights(state: dict | None, groups: dict[int, int], num_layers: int, share: int = 1) -> list[ActorWeights]:
    """The float32 sparse weights of agents from a ``GroupedActor`` state_dict: ``groups`` maps each agent
    to its group; ``share``: groups per stored weight set (the actor's ``share``). The effective weight is
    the weight times its group's ``*_mask`` buffer, if there is one."""
    expected = [f"lstm.weight_{kind}_l{k}" for k in range(num_layers) for kind in ("ih", "hh")]
    expected += [f"lstm.bias_l{k}" for k in range(num_layers)] + ["head.weight", "head.bias"]
    if state is None or any(key not in state for key in expected):
        raise KeyError(f"expected the tensors {', '.join(expected)}")

    def effective(name: str, group: int) -> np.ndarray:
        weight, mask = state[name][group // share], state.get(f"{name}_mask")
        if mask is not None:
            weight = weight * mask[group].to(weight.dtype)
        return weight.float().numpy()

    def bias(name: str, group: int) -> np.ndarray:
        return state[name][group // share].float().numpy()

    actors = []
    for agent, group in groups.items():
        lstm = [SparseMatrix.from_dense(np.concatenate([effective(f"lstm.weight_ih_l{k}", group),
                                                        effective(f"lstm.weight_hh_l{k}", group)], axis=1),
                                        bias(f"lstm.bias_l{k}", group))
                for k in range(num_layers)]
        head = SparseMatrix.from_dense(effective("head.weight", group), bias("head.bias", group))
        actors.append(ActorWeights(agent, lstm, head))
    return actors


def actor_metadata(config, seed: int, iteration: int | None) -> dict:
    """The metadata of actors trained with ``config`` (a TrainConfig): architecture, environment,
    observation encoding and where they come from."""
    env = config.env_config
    features = "one-hot(last action, n_channels + 1) + one-hot(last feedback, 4)"
    if env.observe_snr:
        features += (" + the SNR of the last transmission (free of primary users, collided or not) scaled "
                     "from [snr_low, snr_high] to [0, 1], 0 when idle or blocked")
    return {
        "architecture": {
            "cell": "lstm", "input_size": observation_size(env.n_channels, env.observe_snr),
            "hidden_size": config.hidden_size, "num_layers": config.num_layers, "n_actions": env.n_channels + 1,
            "gate_order": "ifgo",
        },
        "environment": env.to_dict(),
        "encoding": {"features": features, "feedback_codes": list(FEEDBACK_CODES)},
        "source": {
            "seed": seed, "iteration": iteration, "method": config.method, "prune_mode": config.prune_mode,
            "hapruned_version": hapruned.__version__,
        },
    }


def check_out(out, run_dir=None) -> Path:
    """The file an export may write, given as ``out``: a path (symbolic links followed) whose directory
    exists, not a directory itself, and not inside the run directory ``run_dir`` (an export never writes
    over a run's files); ExportError otherwise."""
    if not isinstance(out, (str, os.PathLike)) or not os.fspath(out):
        raise ExportError(f"out must be the path of the file to write, got {out!r}", "out")
    target = Path(os.path.realpath(out))
    if run_dir is not None:
        run = Path(os.path.realpath(run_dir))
        if run == target or run in target.parents:
            raise ExportError(f"{str(out)!r} is inside the run directory {str(run_dir)!r}; an export never writes "
                              f"into a run: choose a path outside it", "out")
    if target.is_dir():
        raise ExportError(f"{str(out)!r} is a directory; give the path of the file to write", "out")
    if not target.parent.is_dir():
        raise ExportError(f"cannot write {str(out)!r}: the directory {str(target.parent)!r} does not exist", "out")
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write {str(out)!r}: the directory {str(target.parent)!r} is not writable", "out")
    return target


def export_actors(run_dir, out, dtype: str = "float32", agents=None, seed: int | None = None,
                  format: str = "hpz") -> int:
    """Export the actors of ``agents`` (None: all) of training seed ``seed`` (None: the first) of the run in
    ``run_dir`` to ``out`` as ``format`` (hpz or onnx); returns the file's size in bytes. ``dtype``: the
    stored values of an hpz file (float32 or float16); ONNX graphs are float32. Everything is checked
    before anything is written, and ``out`` is replaced atomically: on any failure a previous file there
    is left as it was."""
    return write_actors(out, *run_actors(run_dir, seed, agents), dtype=dtype, format=format, run_dir=run_dir)


def write_actors(out, metadata: dict, actors: list[ActorWeights], dtype: str = "float32", format: str = "hpz",
                 run_dir=None) -> int:
    """Write ``run_actors``' result to ``out`` (atomically) as ``format`` with ``dtype`` (see
    ``export_actors``); returns the file's size in bytes. ``run_dir``: the run they come from, whose
    directory ``out`` must not be in."""
    if format not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {format!r}", "format")
    if dtype not in DTYPES:
        raise ExportError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}", "dtype")
    if format == "onnx" and dtype != "float32":
        raise ExportError("dtype float16 is for hpz files; ONNX graphs are float32 (ONNX Runtime's CPU LSTM "
                          "computes in float32)", "dtype")
    target = check_out(out, run_dir)
    try:
        if format == "onnx":
            from hapruned.deploy.onnx_graph import write_onnx

            return write_onnx(target, metadata, actors)
        metadata = {**metadata, "dtype": dtype}
        return write_hpz(target, metadata, [ActorWeights(a.agent, [m.astype(dtype) for m in a.layers],
                                                         a.head.astype(dtype)) for a in actors])
    except OSError as err:  # nothing was written: a previous file at out is as it was
        raise ExportError(f"cannot write {str(out)!r}: {err.strerror or err}", "out") from None
