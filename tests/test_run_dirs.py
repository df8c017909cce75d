"""Run directories that survive crashes, damaged files and hostile values; errors that name the flag."""

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hapruned import storage
from hapruned.algos import trainer
from hapruned.algos.config import TrainConfig
from hapruned.algos.trainer import RunDirError, load_metrics, train
from hapruned.cli import main
from hapruned.env.rng import seed_states
import processes
from in_process import cli
from test_trainer import assert_same_state, interrupt_at, load_checkpoint, tiny_config, without_timings

REPO = Path(__file__).resolve().parents[1]
TINY = ["--n-users", "2", "--n-channels", "2", "--horizon", "4", "--hidden-size", "8", "--iterations", "2",
        "--envs-per-iteration", "2", "--minibatches", "1", "--epochs", "1", "--i-prune", "1", "--eval-every", "2",
        "--eval-episodes", "2"]


def one_line_error(code, err, *words):
    assert code == 2, err
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert "error:" in message
    for word in words:
        assert word in message, (word, message)


def interrupted_run(tmp_path, monkeypatch, name="run", at=5, **overrides):
    """A tiny run stopped during iteration ``at`` with a checkpoint every 2 iterations."""
    config = tiny_config(**overrides)
    with monkeypatch.context() as patch:
        interrupt_at(patch, at, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            train(config, tmp_path / name, progress=False, checkpoint_every=2)
    return config, tmp_path / name


# ---------------------------------------------------------------------------------------------- 1. metrics
def test_a_partial_last_metrics_line_is_dropped_on_resume(tmp_path, monkeypatch):
    config, run = interrupted_run(tmp_path, monkeypatch)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 5, "ep')  # what a crash in the middle of a write leaves
    assert [r["iteration"] for r in load_metrics(run)] == [1, 2, 3, 4]
    train(config, run, resume=True, progress=False, checkpoint_every=2)
    train(config, tmp_path / "whole", progress=False, checkpoint_every=2)
    assert without_timings(load_metrics(run)) == without_timings(load_metrics(tmp_path / "whole"))


# ---------------------------------------------------------------------------------------------- 2. damaged files
@pytest.mark.parametrize("size", [0, 100])
def test_a_truncated_checkpoint_is_a_one_line_error_naming_the_file(tmp_path, monkeypatch, capsys, size):
    _, run = interrupted_run(tmp_path, monkeypatch)
    os.truncate(run / "checkpoint.pt", size)
    code, _, err = cli(["train", "--out", str(run), "--resume"], capsys)
    one_line_error(code, err, "checkpoint.pt", "damaged", "--resume", "--out")


@pytest.mark.parametrize("content,words", [
    ('{"horizon": 4, "colour": "blue"}', ["config.json", "not hold a valid training config"]),
    ("[1, 2, 3]", ["config.json", "JSON object"]),
    ('{"horizon": 4,', ["config.json", "not valid JSON"]),
])
def test_a_damaged_config_is_a_one_line_error_naming_the_file(tmp_path, monkeypatch, capsys, content, words):
    _, run = interrupted_run(tmp_path, monkeypatch)
    (run / "config.json").write_text(content)
    code, _, err = cli(["train", "--out", str(run), "--resume"], capsys)
    one_line_error(code, err, *words)


# ---------------------------------------------------------------------------------------------- 3. foreign checkpoints
@pytest.mark.parametrize("other", [{"actor_lr": 1e-3}, {"hidden_size": 12}])
def test_another_runs_checkpoint_is_refused(tmp_path, monkeypatch, other):
    _, run = interrupted_run(tmp_path, monkeypatch)
    _, foreign = interrupted_run(tmp_path, monkeypatch, name="other", **other)
    (run / "checkpoint.pt").write_bytes((foreign / "checkpoint.pt").read_bytes())
    with pytest.raises(RunDirError, match=rf"another run .*{next(iter(other))}"):
        train(tiny_config(), run, resume=True, progress=False)


# ---------------------------------------------------------------------------------------------- 4. seeds
@pytest.mark.parametrize("seed", [str(2**64 - 1), str(2**64), str(2**63)])
def test_seeds_beyond_the_random_streams_are_refused_before_anything_is_written(tmp_path, capsys, seed):
    code, _, err = cli(["train", "--out", str(tmp_path / "run"), "--seed", seed, *TINY], capsys)
    one_line_error(code, err, "--seed")
    assert not (tmp_path / "run").exists()
    code, _, err = cli(["baselines", "--seed", seed, "--episodes", "2"], capsys)
    one_line_error(code, err, "--seed")
    with pytest.raises(ValueError, match="seed"):
        seed_states(2**64, 1)  # no longer wraps around to seed 0


# ---------------------------------------------------------------------------------------------- 5. bad --out
def test_out_paths_that_cannot_be_directories(tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for out, words in [(a_file, ["not a directory"]), (a_file / "run", ["not a directory"]),
                       (Path("/proc/hapruned-run"), ["cannot create the run directory"])]:
        code, _, err = cli(["train", "--out", str(out), *TINY], capsys)
        one_line_error(code, err, str(out), *words)


def test_a_full_disk_mid_run_is_a_one_line_error_naming_the_path(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"

    def full_disk(obj, f):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trainer.torch, "save", full_disk)
    code, _, err = cli(["train", "--out", str(run), *TINY], capsys)
    assert code == 1 and "Traceback" not in err
    assert "No space left on device" in err and str(run / "checkpoint.pt") in err.strip().splitlines()[-1]
    assert not list(run.glob("*.tmp"))


# ---------------------------------------------------------------------------------------------- 6. memory
@pytest.mark.parametrize("flag,value", [("--eval-episodes", "1000000000"), ("--horizon", "1000000000"),
                                        ("--n-users", "100000000"), ("--envs-per-iteration", "1000000000")])
def test_runs_beyond_the_memory_are_refused_naming_the_flag(tmp_path, capsys, flag, value):
    code, _, err = cli(["train", "--out", str(tmp_path / "run"), *TINY, flag, value], capsys)
    one_line_error(code, err, flag, "memory")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags,named", [(["--n-users", "100000000"], "--n-users"),
                                         (["--num-envs", "1000000000", "--episodes", "1000000000"], "--num-envs")])
def test_baselines_beyond_the_memory_are_refused_naming_the_flag(capsys, flags, named):
    code, _, err = cli(["baselines", *flags], capsys)
    one_line_error(code, err, named, "memory")


# ---------------------------------------------------------------------------------------------- 7. killed writes
KILLED_WRITER = textwrap.dedent("""
    import json, sys, time
    import torch
    from hapruned.algos import trainer
    from hapruned.algos.config import TrainConfig

    config, out, ready = TrainConfig(**json.loads(sys.argv[1])), sys.argv[2], sys.argv[3]
    real_save, calls = torch.save, []

    def save(obj, f):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint hangs half-written until the process is killed
            f.write(b"half a checkpoint")
            f.flush()
            open(ready, "w").close()
            time.sleep(120)
        real_save(obj, f)

    trainer.torch.save = save
    trainer.train(config, out, progress=False, checkpoint_every=2)
""")


def test_a_kill_during_a_checkpoint_write_leaves_the_last_checkpoint_and_resume_cleans_up(tmp_path):
    config = tiny_config()
    run, ready = tmp_path / "run", tmp_path / "ready"
    with processes.started([sys.executable, "-c", KILLED_WRITER, json.dumps(trainer.config_dict(config)), str(run),
                            str(ready)], cwd=REPO) as child:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert child.poll() is None and time.monotonic() < deadline, "the writer never reached its second checkpoint"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert list(run.glob("checkpoint.pt.*.tmp")), "the kill left no temporary file, so it tested nothing"
    assert load_checkpoint(run)["iteration"] == 2

    train(config, run, resume=True, progress=False, checkpoint_every=2)
    assert not list(run.glob("*.tmp"))
    train(config, tmp_path / "whole", progress=False, checkpoint_every=2)
    assert_same_state(load_checkpoint(run)["algo"], load_checkpoint(tmp_path / "whole")["algo"])


# ---------------------------------------------------------------------------------------------- 8. file modes
def test_files_follow_the_umask_also_after_a_resume(tmp_path, monkeypatch):
    previous = os.umask(0o027)
    try:
        _, run = interrupted_run(tmp_path, monkeypatch)
        train(tiny_config(), run, resume=True, progress=False, checkpoint_every=2)
    finally:
        os.umask(previous)
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "summary.json"):
        assert (run / name).stat().st_mode & 0o777 == 0o640, name


# ---------------------------------------------------------------------------------------------- 9. Ctrl-C
def test_an_interrupt_that_breaks_the_writer_stays_an_interrupt(tmp_path):
    """Ctrl-C inside torch.save can make its zip writer fail on exit with a RuntimeError; the run must still
    stop as interrupted (exit 130, resume hint) and keep the previous file whole."""
    path = tmp_path / "checkpoint.pt"
    path.write_text("previous")

    def write(f):
        try:
            raise KeyboardInterrupt
        finally:
            raise RuntimeError("the writer's cleanup failed")

    with pytest.raises(KeyboardInterrupt):
        storage.replace_atomically(path, write, binary=False)
    assert path.read_text() == "previous" and list(tmp_path.iterdir()) == [path]


def test_ctrl_c_exits_130_with_a_resume_hint_and_no_traceback(tmp_path):
    """A real SIGINT to a training (its default disposition restored, should the suite run where SIGINT is
    ignored); the run is long enough to be interrupted and ends by itself should the signal be lost."""
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "hapruned", "train", "--out", str(run), "--json", "--checkpoint-every", "1",
            *TINY, "--iterations", "3000", "--eval-every", "1000"]
    with processes.started(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as child:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").exists() or len((run / "metrics.jsonl").read_text().splitlines()) < 3:
            assert child.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted at iteration" in err and f"--out {run} --resume" in err
    assert load_checkpoint(run)["iteration"] >= 2


# ---------------------------------------------------------------------------------------------- 10. messages
@pytest.mark.parametrize("flags,words", [
    (["--n-users", "0"], ["--n-users"]),
    (["--seeds", "3-1"], ["--seeds", "backwards"]),
    (["--seeds", "x"], ["--seeds"]),
    (["--agent-sparsity", "0.5,x"], ["--agent-sparsity"]),
    (["--actor-lr", "inf"], ["--actor-lr", "finite"]),
    (["--gamma", "nan"], ["--gamma"]),
])
def test_errors_name_the_flag_not_the_field_or_the_parser(tmp_path, capsys, flags, words):
    code, _, err = cli(["train", "--out", str(tmp_path / "run"), *TINY, *flags], capsys)
    one_line_error(code, err, *words)
    assert "TrainConfig" not in err and "parse_" not in err
    assert not (tmp_path / "run").exists()


def test_booleans_are_not_numbers():
    for field in ("sparsity", "amplitude", "gamma", "actor_lr"):
        with pytest.raises(ValueError, match=field):
            TrainConfig(**{field: True})


# ---------------------------------------------------------------------------------------------- fuzz
INT_VALUES = ["-1", "0", "1", "2", "3", "x", "1.5", "", "nan", str(2**64), "1e3"]
MEMORY_INTS = INT_VALUES + ["1000000000"]  # flags whose size the memory check must catch
FLOAT_VALUES = ["-1", "0", "0.5", "1", "1.5", "nan", "inf", "-inf", "1e400", "x", "", "True"]
TRAIN_FLAGS = {
    "--algo": ["ppo", "ac", "dqn", "pai", "sarsa", ""], "--setup": ["A", "B", "C"],
    "--method": ["harmonic", "dense", "constant", "cubic"], "--prune-mode": ["regrow", "masked", "soft"],
    "--critic-input": ["own", "joint", "none"], "--seeds": ["0-2", "3-1", "1,1", "x", "0-99999"],
    "--agent-sparsity": ["0.5,0.5", "0.5", "1,1", "x,y"], "--device": ["cpu", "cuda", "tpu"],
    "--pu-prob": FLOAT_VALUES + ["0.1,0.2", "0.1,x"], "--snr-low": FLOAT_VALUES, "--snr-high": FLOAT_VALUES,
    "--threads": INT_VALUES + ["100000", str(10**20)],
    **{flag: MEMORY_INTS for flag in ("--n-users", "--horizon", "--envs-per-iteration", "--eval-episodes",
                                      "--hidden-size", "--replay-capacity")},
    **{flag: INT_VALUES for flag in ("--n-channels", "--num-layers", "--epochs", "--minibatches", "--i-prune",
                                     "--i-start", "--i-end", "--period", "--eval-every", "--replay-batch",
                                     "--updates-per-iteration", "--target-update", "--seed")},
    **{flag: FLOAT_VALUES for flag in ("--sparsity", "--p0", "--amplitude", "--actor-lr", "--critic-lr", "--gamma",
                                       "--gae-lambda", "--clip", "--entropy-coef", "--max-grad-norm", "--target-tau",
                                       "--epsilon-start", "--epsilon-end", "--epsilon-decay", "--eval-epsilon")},
}
BASELINE_FLAGS = {
    "--setup": ["A", "B", "Z"], "--schemes": ["aloha", "oca,oracle", "sticky", "magic", ""],
    "--episodes": INT_VALUES, "--num-envs": MEMORY_INTS, "--seed": INT_VALUES, "--n-users": MEMORY_INTS,
    "--n-channels": INT_VALUES + ["17"], "--horizon": INT_VALUES, "--aloha-p": FLOAT_VALUES,
    "--snr-low": FLOAT_VALUES, "--snr-high": FLOAT_VALUES, "--pu-prob": FLOAT_VALUES + ["0.1,0.2", "0.1,x"],
}
# small valid values for the flags not drawn, so that a valid draw runs in a moment
BASELINE_BASE = ["--episodes", "3", "--n-users", "3", "--n-channels", "2", "--horizon", "3", "--json"]


@pytest.mark.parametrize("trial", range(40))
def test_fuzzed_flags_exit_0_or_2_without_traceback_and_leave_nothing_on_2(tmp_path, capsys, trial):
    rng = random.Random(trial)
    for command, flags in (("train", TRAIN_FLAGS), ("baselines", BASELINE_FLAGS)):
        drawn = []
        for flag in rng.sample(sorted(flags), k=rng.randint(1, 3)):
            drawn += [flag, rng.choice(flags[flag])]
        out = tmp_path / f"run-{command}"
        base = [*TINY, "--json", "--out", str(out)] if command == "train" else BASELINE_BASE
        try:
            code, _, err = cli([command, *base, *drawn], capsys)
        except Exception as error:  # anything but a clean exit is what this test looks for
            pytest.fail(f"hapruned {command} {' '.join(drawn)} raised {type(error).__name__}: {error}")
        assert code in (0, 2), (command, drawn, err)
        assert "Traceback" not in err, (command, drawn, err)
        if command == "train" and code == 2:
            assert not out.exists(), (drawn, err)


# ---------------------------------------------------------------------------------------------- fuzzed files
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Made once: a finished tiny run, its exported .hpz and a finished reproduce grid of one scheme and one
    learned method."""
    from hapruned.experiments import grid

    root = tmp_path_factory.mktemp("finished")
    tiny = grid.Budget("fast", dict(n_users=2, n_channels=2, horizon=4, hidden_size=8, iterations=2, envs_per_iteration=2,
                                    minibatches=1, epochs=1, i_prune=1, eval_every=2, eval_episodes=2), seeds=(0,))
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(grid.BUDGETS, "tiny", tiny)
        assert main(["train", "--out", str(root / "run"), "--json", "--threads", "1", *TINY]) == 0
        assert main(["export", str(root / "run"), "--out", str(root / "actors.hpz")]) == 0
        assert main(["reproduce", "--budget", "tiny", "--out", str(root / "grid"), "--setups", "A",
                     "--methods", "aloha,linear", "--jobs", "1", "--threads", "1"]) == 0
    return root


# each damaged file, and the command that reads it
FUZZED_FILES = {
    "run/summary.json": lambda root: ["bounds", str(root / "run")],
    "run/config.json": lambda root: ["bounds", str(root / "run")],
    "run/metrics.jsonl": lambda root: ["train", "--out", str(root / "run"), "--resume"],
    "run/checkpoint.pt": lambda root: ["export", str(root / "run"), "--out", str(root / "out.hpz")],
    "grid/experiment.json": lambda root: ["report", str(root / "grid")],
    "grid/runs/A/linear/seed-0/summary.json": lambda root: ["report", str(root / "grid")],
    "grid/runs/A/aloha/seed-0/summary.json": lambda root: ["report", str(root / "grid")],
    "grid/runs/A/linear/seed-0/metrics.jsonl": lambda root: ["report", str(root / "grid")],
    "grid/runs/A/linear/seed-0/config.json": lambda root: ["report", str(root / "grid")],
    "actors.hpz": lambda root: ["deploy-bench", str(root / "actors.hpz"), "--steps", "5"],
}
HOSTILE_VALUES = [None, "x", "../..", -1, 0, 2**70, 1e308, float("nan"), True, [], {}, [1, "a"], {"a": 1}]


def damaged(data: bytes, rng: random.Random) -> bytes:
    """``data`` damaged as a crash, a failing disk or a careless hand damages a file: random bytes, a
    truncation, flipped bits, or one value of a JSON record replaced by a hostile one."""
    kind = rng.choice(["bytes", "truncate", "flip", "value"])
    if kind == "bytes":
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
    if kind == "truncate":
        return data[:rng.randrange(len(data))]
    try:
        lines = data.decode().splitlines()
        number = rng.randrange(len(lines))
        record = json.loads(lines[number])
    except (UnicodeDecodeError, ValueError):
        kind = "flip"  # not JSON lines (an .hpz)
    if kind == "flip":
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        return bytes(flipped)
    if isinstance(record, dict) and record:
        record[rng.choice(sorted(record))] = rng.choice(HOSTILE_VALUES)
    else:
        record = rng.choice(HOSTILE_VALUES)
    lines[number] = json.dumps(record)
    return "\n".join(lines).encode() + b"\n"


@pytest.mark.parametrize("trial", range(32))
def test_fuzzed_files_exit_0_or_with_one_line_error(finished, tmp_path, capsys, trial):
    rng = random.Random(trial)
    target = sorted(FUZZED_FILES)[trial % len(FUZZED_FILES)]
    top = target.split("/")[0]
    (shutil.copytree if (finished / top).is_dir() else shutil.copy2)(finished / top, tmp_path / top)
    (tmp_path / target).write_bytes(damaged((tmp_path / target).read_bytes(), rng))
    argv = FUZZED_FILES[target](tmp_path)
    try:
        code, _, err = cli(argv, capsys)
    except Exception as error:  # anything but a clean exit is what this test looks for
        pytest.fail(f"hapruned {' '.join(argv)} with a damaged {target} raised {type(error).__name__}: {error}")
    assert code in (0, 2) and "Traceback" not in err, (target, err)
    if code:
        one_line_error(code, err)
        assert len(err.strip().splitlines()) == 1, err
