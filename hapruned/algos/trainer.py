"""The training run: iterate, evaluate, log, checkpoint, resume.

A run directory holds

- ``config.json``: the resolved :class:`~hapruned.algos.config.TrainConfig`, written at the start;
- ``metrics.jsonl``: one JSON object per iteration (the algorithm's metrics, such as
  ``episode_reward``, ``sparsity`` per agent and, for the actor-critics, ``entropy``,
  ``explained_variance`` (PPO and PaI: ``approx_kl``, ``clip_fraction``), for DQN ``loss``, ``q_mean``,
  ``epsilon``; plus ``iteration``, ``iteration_time_s``, ``wall_time_s``, ``agent_steps_per_s`` and, on evaluation iterations, ``eval_reward`` and ``eval_reward_per_seed``);
- ``checkpoint.pt``: the algorithm's complete state, the iteration and the trainer's counters, as
  tensors and plain values with their SHA-256 digest, replaced atomically (written to a temporary file
  in the same directory, then renamed), read with ``weights_only`` and checked against the digest;
- ``summary.json``: the final evaluation reward (per seed and mean) and the per-agent sparsity.

Evaluation always replays the same held-out episodes (:func:`eval_seed`), so eval rewards are
comparable across iterations. ``resume=True`` continues from ``checkpoint.pt``; on CPU the result is
the same as an uninterrupted run (same parameters, same metrics apart from the timings).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import pickle
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hapruned.algos.config import TrainConfig
from hapruned.algos.dqn import RecurrentDQN
from hapruned.algos.ppo import IAGCPPO
from hapruned.env import DSAConfig, observation_size
from hapruned.resources import check_memory
from hapruned.storage import LOCK_FILE, DirectoryLock, DirectoryLocked, replace_atomically, write_atomic
from hapruned.validation import check_integer

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
SUMMARY_FILE = "summary.json"

# Evaluation environments are seeded far from any training seed, so held-out episodes never
# coincide with training ones.
EVAL_SEED_OFFSET = 1 << 40


# Fields added after run directories were first written, with the value that older runs had implicitly
# (their defaults): a saved config without one compares as if it held that value, so those runs still resume.
LATER_FIELDS = {name: TrainConfig.__dataclass_fields__[name].default for name in (
    "algo", "snr_low", "snr_high", "pu_prob", "observe_snr", "replay_capacity", "replay_batch", "updates_per_iteration",
    "target_update", "target_tau", "epsilon_start", "epsilon_end", "epsilon_decay", "eval_epsilon", "init")}
ENV_LATER_FIELDS = {"observe_snr": DSAConfig.__dataclass_fields__["observe_snr"].default}


# The learner of each ``TrainConfig.algo``; every one provides train_iteration, evaluate and its state.
LEARNERS = {"ppo": IAGCPPO, "ac": IAGCPPO, "pai": IAGCPPO, "dqn": RecurrentDQN}


class RunDirError(ValueError):
    """The run directory cannot be used as asked (not empty without resume, or a different config)."""


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the run stopped and the last good checkpoint is untouched."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during training; the message says where the run stopped and how to resume it."""


def eval_seed(seed: int) -> int:
    """The seed of the fixed held-out evaluation episodes of a run whose (first) training seed is ``seed``."""
    return EVAL_SEED_OFFSET + int(seed)


def train(
    config: TrainConfig,
    out_dir,
    resume: bool = False,
    progress: bool = True,
    checkpoint_every: int = 25,
    on_record=None,
) -> dict:
    """Train ``config`` into ``out_dir`` and return the summary (also written to ``summary.json``).

    ``out_dir`` must be missing or empty unless ``resume`` is True; with ``resume`` the run continues
    from its last checkpoint (or starts when the directory holds none) and the config must equal the
    one the run started with; otherwise :class:`RunDirError`. ``checkpoint_every``: iterations
    between checkpoints (one is always written at the end). ``progress``: show a tqdm bar on stderr.
    ``on_record``: called with each iteration's record once it is in ``metrics.jsonl`` (e.g. a
    :class:`~hapruned.algos.tensorboard_sink.TensorBoardSink`).

    The run holds the directory's lock (``hapruned.storage.DirectoryLock``) until it returns: a second
    writer is refused with :class:`RunDirError` naming the first.

    Raises :class:`TrainingDiverged` when a loss turns NaN/inf; ``checkpoint.pt`` then still holds
    the last good state.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    checkpoint_every = check_integer(checkpoint_every, "checkpoint_every", 1)
    # everything that can be refused is refused before the run directory is touched
    check_device(config.device)
    check_memory(training_memory(config))
    out = Path(out_dir)
    if not out.is_dir():
        _check_new_run_dir(out, resume)
    algo = LEARNERS[config.algo](config)
    with lock_run_dir(out):
        return _run(algo, out, resume, progress, checkpoint_every, on_record)


def lock_run_dir(out, what: str = "run directory") -> DirectoryLock:
    """The exclusive lock of the directory ``out`` (created if missing), one writer at a time; RunDirError
    naming the process that holds it, or saying why it cannot be taken. ``what``: the directory's name in
    messages."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"cannot create the {what} {str(out)!r}: {err.strerror or err}") from None
    try:
        return DirectoryLock(out)
    except DirectoryLocked as err:
        raise RunDirError(f"the {what} {err}") from None
    except OSError as err:
        raise RunDirError(f"cannot write into the {what} {str(out)!r} (to lock it): {err.strerror or err}") from None


def _run(algo, out: Path, resume: bool, progress: bool, checkpoint_every: int, on_record) -> dict:
    """``train`` once it holds the run directory."""
    config = algo.config
    resolved = config_dict(config)
    resuming = resume and (out / CONFIG_FILE).exists()
    if not resuming:
        _check_new_run_dir(out, resume)  # again, now that no other process can write into it

    trainer_state = {"wall_time_s": 0.0, "agent_steps": 0, "last_eval": None}
    start = 0
    checkpoint = out / CHECKPOINT_FILE
    if resuming:
        check_same_config(read_config_file(out), resolved, out)
        _remove_interrupted_writes(out)
        if checkpoint.exists():
            saved = read_run_checkpoint(out, resolved, RESUME_HINT)
            try:
                algo.load_state_dict(saved["algo"])
                torch.set_rng_state(saved["torch_rng"])
            except (KeyError, RuntimeError, ValueError, TypeError) as err:
                raise RunDirError(_damaged(checkpoint, f"its state does not fit this run's networks ({_first_line(err)})")) from None
            trainer_state = saved["trainer"]
            start = saved["iteration"]
        _truncate_metrics(out / METRICS_FILE, start)
    else:
        write_atomic(out / CONFIG_FILE, json.dumps(resolved, indent=2) + "\n")
        write_atomic(out / METRICS_FILE, "")

    seeds = config.seed_list
    held_out = eval_seed(seeds[0])
    clock_start, time_before = time.perf_counter(), trainer_state["wall_time_s"]
    bar = tqdm(total=config.iterations, initial=start, file=sys.stderr, disable=not progress, desc="train", unit="it")
    iteration = start
    with bar, open(out / METRICS_FILE, "a") as metrics_file, _interrupt_note(out, lambda: (iteration, start)):
        for iteration in range(start + 1, config.iterations + 1):
            tic = time.perf_counter()
            try:
                metrics = algo.train_iteration(iteration)
            except FloatingPointError as err:
                saved_at = f"iteration {start}" if checkpoint.exists() else "none written yet"
                raise TrainingDiverged(
                    f"training diverged at iteration {iteration}: {err}. The last good checkpoint "
                    f"({saved_at}) in {str(out)!r} is intact; resuming it repeats the same computation, "
                    f"so start a new run with changed settings (e.g. lower learning rates)."
                ) from err
            elapsed = time.perf_counter() - tic
            trainer_state["agent_steps"] += int(metrics["agent_steps"])
            record = {"iteration": iteration, **metrics}
            record["iteration_time_s"] = elapsed  # rollout + update + prune
            record["agent_steps_per_s"] = metrics["agent_steps"] / elapsed if elapsed > 0 else math.inf

            if iteration % config.eval_every == 0 or iteration == config.iterations:
                per_seed = [float(r) for r in algo.evaluate(config.eval_episodes, held_out)]
                trainer_state["last_eval"] = per_seed
                record["eval_reward"] = float(np.mean(per_seed))
                record["eval_reward_per_seed"] = per_seed
            # the whole run's time so far, evaluations and checkpoints included, across resumes
            trainer_state["wall_time_s"] = time_before + time.perf_counter() - clock_start
            record["wall_time_s"] = trainer_state["wall_time_s"]
            metrics_file.write(json.dumps(record, default=_to_json) + "\n")
            metrics_file.flush()
            if on_record is not None:
                on_record(record)

            if iteration % checkpoint_every == 0 or iteration == config.iterations:
                _save_checkpoint(checkpoint, {
                    "iteration": iteration,
                    "algo": algo.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "trainer": trainer_state,
                    "config": resolved,
                })
                start = iteration
            bar.update(1)
            bar.set_postfix(_postfix(record, trainer_state["last_eval"]), refresh=False)

    per_seed = trainer_state["last_eval"]  # the final iteration always evaluates
    last = _last_record(out / METRICS_FILE)
    summary = {
        "final_eval_reward": float(np.mean(per_seed)),
        "final_eval_reward_per_seed": per_seed,
        "seeds": list(seeds),
        "sparsity_per_agent": _to_json(last.get("sparsity")) if last else None,
        "iterations": config.iterations,
        "eval_episodes": config.eval_episodes,
        "eval_seed": held_out,
        "agent_steps": trainer_state["agent_steps"],
        "wall_time_s": trainer_state["wall_time_s"],
        "out_dir": str(out),
    }
    write_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2, default=_to_json) + "\n")
    return summary


def config_dict(config: TrainConfig) -> dict:
    """The config as plain JSON values (tuples become lists), as written to ``config.json``."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=_to_json))


def check_device(device: str) -> None:
    """Refuse a CUDA device when torch sees no GPU, before any work is done."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} but torch sees no CUDA GPU (torch {torch.__version__}, "
            f"built with CUDA {torch.version.cuda}); use device='cpu'"
        )


def training_memory(config: TrainConfig) -> dict[str, tuple[float, str]]:
    """Rough bytes of the large parts of a run (see ``hapruned.resources.check_memory``); each part
    names the flags it grows with."""
    S, N, K, T, H, L = len(config.seed_list), config.n_users, config.n_channels, config.horizon, config.hidden_size, config.num_layers
    F, A, B, G = observation_size(K, config.observe_snr), K + 1, config.envs_per_iteration, S * N
    per_network = 4 * H * (F + H + 1) + (L - 1) * 4 * H * (2 * H + 1) + A * (H + 1)  # weights of one LSTM + head
    # the weights (DQN's and PaI's one set per seed, else one per agent; DQN's target or the critics), each
    # with its gradient and Adam moments (float32), and a bool mask per agent
    weights = (S if config.algo in ("dqn", "pai") else G) * per_network
    weights += S * per_network if config.algo == "dqn" else S * (per_network + 4 * H * (N - 1) * F)
    networks = 4 * 4 * weights + G * per_network
    # training: the recorded rollout and the sequence ops' saved activations (gates, states) with gradients
    sequences = S * config.replay_batch * N * 2 if config.algo == "dqn" else 2 * G * B // config.minibatches
    training = 4 * T * (G * B * (F + 4) + 2 * 6 * H * L * sequences)
    input_bytes = 4 if config.observe_snr else 1  # the replay's inputs: float32 with the SNR feature, else uint8
    replay = S * config.replay_capacity * T * (N * (input_bytes * F + 2) + 8) if config.algo == "dqn" else 0
    # evaluation: S x eval_episodes environments (SNRs and rates float64) and the recurrent states
    evaluation = S * config.eval_episodes * N * (8 * (2 * K + 4) + 4 * F + 4 * H * (2 * L + 12))
    return {
        "the networks": (networks, "--n-users, --hidden-size, --num-layers and the number of --seeds"),
        "the rollout and update": (training, "--envs-per-iteration, --horizon, --n-users and --hidden-size"),
        "the replay buffer": (replay, "--replay-capacity, --horizon and --n-users"),
        "the evaluation": (evaluation, "--eval-episodes, --n-users, --n-channels and --hidden-size"),
    }


def load_config(out_dir) -> TrainConfig:
    """The config a run directory was started with (its ``config.json``); RunDirError if it is damaged."""
    path = Path(out_dir) / CONFIG_FILE
    values = read_config_file(Path(out_dir))
    try:
        return TrainConfig.from_dict(values)
    except (TypeError, ValueError) as err:
        raise RunDirError(f"{str(path)!r} does not hold a valid training config ({_first_line(err)}); "
                          f"it is damaged: start a new --out") from None


def load_metrics(out_dir) -> list[dict]:
    """The records of ``metrics.jsonl`` in a run directory, in order; a partial last line (what a crash
    mid-write leaves) is left out."""
    return _read_metrics(Path(out_dir) / METRICS_FILE)


def _read_metrics(path: Path) -> list[dict]:
    # bytes that are not UTF-8 (hapruned writes ASCII) become U+FFFD, which no JSON record holds
    text = path.read_bytes().decode("utf-8", errors="replace") if path.exists() else ""
    lines = [line for line in text.splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise RunDirError(f"{str(path)!r} is damaged at line {number} (not JSON); start a new --out") from None
        if not (isinstance(record, dict) and type(record.get("iteration")) is int):
            raise RunDirError(f"{str(path)!r} is damaged at line {number} (not a record with an integer "
                              f"iteration); start a new --out")
        records.append(record)
    return records


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


RESUME_HINT = ". Delete it and run again with --resume to restart this run from iteration 0, or start a new --out"


def _damaged(path: Path, what: str) -> str:
    return f"cannot resume from {str(path)!r}: {what}{RESUME_HINT}"


def _check_new_run_dir(out: Path, resume: bool) -> None:
    """A new run needs ``out`` to be an empty directory or a path that can become one."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"the run directory {str(out)!r} exists and is not a directory; choose another --out")
    if out.is_dir() and any(not path.name.startswith(LOCK_FILE) for path in out.iterdir()):
        hint = (f"it holds no {CONFIG_FILE}, so it is not a run directory" if resume
                else "pass resume=True (--resume) to continue that run")
        raise RunDirError(f"the run directory {str(out)!r} is not empty; {hint}, or choose a new --out")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise RunDirError(f"cannot create the run directory {str(out)!r}: {str(parent)!r} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot create the run directory {str(out)!r}: {str(parent)!r} is not writable")


def read_config_file(out: Path) -> dict:
    """The JSON object of a run directory's ``config.json``; RunDirError naming the file if it is damaged."""
    path = Path(out) / CONFIG_FILE
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunDirError(f"{str(path)!r} is not valid JSON ({_first_line(err)}); it is damaged: start a new --out") from None
    if not isinstance(values, dict):
        raise RunDirError(f"{str(path)!r} does not hold a training config (a JSON object); start a new --out")
    return values


# What checkpoints written before the digest existed hold besides tensors and plain values: the environments'
# random streams as a uint64 NumPy array. Exactly the globals that unpickling such an array needs, under
# both names of NumPy's module (numpy.core before NumPy 2, numpy._core since), and nothing else.
_reconstruct = np.zeros(0).__reduce__()[0]  # what an array pickles as, whichever module holds it
_OLD_CHECKPOINT_GLOBALS = [
    *((_reconstruct, f"{module}.multiarray._reconstruct") for module in ("numpy.core", "numpy._core")),
    np.ndarray, np.dtype, type(np.dtype(np.uint64)),
]
CHECKPOINT_KEYS = ("iteration", "algo", "torch_rng", "trainer", "config")


def read_checkpoint(path: Path, hint: str = "") -> dict:
    """A ``checkpoint.pt``, loaded without running anything it holds (``weights_only``) and checked
    against its digest; RunDirError naming the file (then ``hint``) if it is damaged or not a checkpoint.
    Checkpoints written before the digest existed have none and load unchecked."""
    try:
        # torch warns about what it refuses (a pickle protocol, say): the error below says it in one line
        with torch.serialization.safe_globals(_OLD_CHECKPOINT_GLOBALS), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused what it read (garbage, or an object): nothing of it ran
        raise RunDirError(f"{str(path)!r} is damaged or not a hapruned checkpoint: it holds something other than "
                          f"tensors and plain values, refused without running it{hint}") from None
    except Exception as err:  # torch.load raises many kinds on a truncated or foreign file
        raise RunDirError(f"{str(path)!r} is damaged ({type(err).__name__}: {_first_line(err)}){hint}") from None
    if not isinstance(saved, dict) or not set(CHECKPOINT_KEYS) <= saved.keys():
        raise RunDirError(f"{str(path)!r} is not a hapruned checkpoint{hint}")
    if "digest" in saved:
        try:
            digest = checkpoint_digest(saved)
        except TypeError as err:
            raise RunDirError(f"{str(path)!r} is not a hapruned checkpoint ({err}){hint}") from None
        if digest != saved["digest"]:
            raise RunDirError(f"{str(path)!r} is damaged: its contents do not match its checksum{hint}")
    return saved


def read_run_checkpoint(out, config: dict, hint: str = "") -> dict:
    """The ``checkpoint.pt`` of the run directory ``out`` (see :func:`read_checkpoint`), checked to belong to
    the run of ``config`` (the resolved config of its ``config.json``, seeds included); RunDirError naming
    the file (then ``hint``) otherwise. Resume and export both read checkpoints through it."""
    path = Path(out) / CHECKPOINT_FILE
    saved = read_checkpoint(path, hint)
    saved_config = with_later_fields(saved["config"]) if isinstance(saved["config"], dict) else {}
    if saved_config != config:
        differing = sorted(k for k in saved_config.keys() | config.keys() if saved_config.get(k) != config.get(k))
        raise RunDirError(f"{str(path)!r} was written by another run (its config differs from {CONFIG_FILE} "
                          f"in {', '.join(differing)}){hint}")
    iteration, trainer_state = saved["iteration"], saved["trainer"]
    if not (type(iteration) is int and 0 <= iteration <= config["iterations"]):
        raise RunDirError(f"{str(path)!r} is damaged: its iteration {iteration!r} is outside "
                          f"0..{config['iterations']}{hint}")
    if not (isinstance(trainer_state, dict) and {"wall_time_s", "agent_steps", "last_eval"} <= trainer_state.keys()):
        raise RunDirError(f"{str(path)!r} is not a hapruned checkpoint: it lacks the trainer's counters{hint}")
    return saved


def checkpoint_digest(payload: dict) -> str:
    """SHA-256 (hex) of a checkpoint's contents but its ``digest``: every tensor's dtype, shape and bytes and
    every plain value, in a canonical order (dict keys sorted). TypeError for anything that is neither a
    tensor nor a plain value (dict, list, tuple, str, int, float, bool, None)."""
    sha = hashlib.sha256()

    def feed(tag: str, data=b"") -> None:  # data: bytes or a uint8 array
        sha.update(f"{tag}:{len(data)}:".encode())
        sha.update(data)

    def visit(value) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().to("cpu").contiguous()
            feed(f"tensor {tensor.dtype} {tuple(tensor.shape)}", tensor.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(value, dict):
            keys = sorted((key for key in value if value is not payload or key != "digest"),
                          key=lambda key: (type(key).__name__, repr(key)))
            feed(f"dict {len(keys)}")
            for key in keys:
                visit(key)
                visit(value[key])
        elif isinstance(value, (list, tuple)):
            feed(f"{type(value).__name__} {len(value)}")
            for item in value:
                visit(item)
        elif value is None or type(value) in (str, int, float, bool):
            feed(type(value).__name__, repr(value).encode())
        else:
            raise TypeError(f"a checkpoint holds only tensors and plain values, not {type(value).__name__}")

    visit(payload)
    return sha.hexdigest()


def _remove_interrupted_writes(out: Path) -> None:
    """Delete the temporary files of atomic writes that a killed process left behind."""
    for name in (CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE, SUMMARY_FILE):
        for stray in out.glob(f"{name}.*.tmp"):
            stray.unlink(missing_ok=True)


@contextlib.contextmanager
def _interrupt_note(out: Path, where):
    """Turn Ctrl-C into TrainingInterrupted, whose message says where the run stopped and how to resume."""
    try:
        yield
    except KeyboardInterrupt as err:
        if isinstance(err, TrainingInterrupted):
            raise
        iteration, saved = where()
        progress = f"the last checkpoint is at iteration {saved}" if saved else "no checkpoint yet (it restarts at 1)"
        raise TrainingInterrupted(
            f"interrupted at iteration {iteration}; {progress}; resume with: hapruned train --out {str(out)} --resume"
        ) from None


def with_later_fields(saved: dict) -> dict:
    """A saved config with the ``LATER_FIELDS`` it lacks (a scheme run's environment under ``env``, with
    the environment's ones)."""
    if "iterations" in saved:  # a training config
        return {**LATER_FIELDS, **saved}
    if isinstance(saved.get("env"), dict):
        return {**saved, "env": {**ENV_LATER_FIELDS, **saved["env"]}}
    return saved


def check_same_config(saved: dict, current: dict, out: Path) -> None:
    saved = with_later_fields(saved)
    differing = sorted(key for key in saved.keys() | current.keys() if saved.get(key) != current.get(key))
    if differing:
        details = "; ".join(f"{key}: run has {saved.get(key)!r}, given {current.get(key)!r}" for key in differing)
        raise RunDirError(
            f"cannot resume {str(out)!r} with a different config (differing fields: {', '.join(differing)}). "
            f"{details}"
        )


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Drop the records written after the checkpoint (and a partial last line), so the resumed run
    rewrites them."""
    kept = [record for record in _read_metrics(path) if record["iteration"] <= iteration]
    if [record["iteration"] for record in kept] != list(range(1, iteration + 1)):
        raise RunDirError(f"{str(path)!r} lacks records of iterations before the checkpoint's ({iteration}); "
                          f"it is damaged: start a new --out")
    write_atomic(path, "".join(json.dumps(record) + "\n" for record in kept))


def _last_record(path: Path) -> dict | None:
    records = _read_metrics(path)
    return records[-1] if records else None


def _save_checkpoint(path: Path, payload: dict) -> None:
    """Write ``payload`` (tensors and plain values) with its digest, atomically."""
    payload = {**payload, "digest": checkpoint_digest(payload)}
    replace_atomically(path, lambda f: torch.save(payload, f))


def _to_json(value):
    """json.dumps fallback for numpy scalars/arrays and tensors."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_to_json(v) for v in value]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _postfix(record: dict, last_eval) -> dict:
    sparsity = record.get("sparsity")
    return {
        "reward": f"{float(record['episode_reward']):.1f}",
        "eval": "-" if last_eval is None else f"{float(np.mean(last_eval)):.1f}",
        "sparsity": "-" if sparsity is None else f"{float(np.mean(_to_json(sparsity))):.3f}",
        "steps/s": f"{record['agent_steps_per_s']:.0f}",
    }
