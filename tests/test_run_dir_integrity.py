"""What a run directory may not do to the process that reads it, and what two processes may not do to one
run directory: checkpoints are read without running anything in them and checked against their digest,
one writer at a time holds a run's lock, and damaged files stop a resume with one line."""

import errno
import io
import json
import os
import pathlib
import pickle
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from hapruned import storage
from hapruned.algos import trainer
from hapruned.algos.trainer import RunDirError, load_metrics, train
from hapruned.storage import LOCK_FILE, DirectoryLock, DirectoryLocked
from test_run_dirs import REPO, TINY, cli, interrupted_run, one_line_error
from test_trainer import algo_config, assert_same_state, load_checkpoint, tiny_config, without_timings


class Planted:
    """An object whose unpickling creates a directory: what a hostile checkpoint would do with os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def plant(path, marker, how):
    """Replace the checkpoint at ``path`` with one that runs code when unpickled."""
    if how == "torch.save":
        torch.save(Planted(marker), path)
    elif how == "inside a checkpoint":  # a well-formed checkpoint with the object in its state
        saved = load_checkpoint(path.parent)
        saved["algo"]["actor_optimizer"] = Planted(marker)
        saved.pop("digest", None)
        torch.save(saved, path)
    else:  # a bare pickle, which torch.load reads as its legacy format
        path.write_bytes(pickle.dumps(Planted(marker)))
    assert not pathlib.Path(marker).exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("finished") / "run"
    train(tiny_config(iterations=2, eval_every=2), run, progress=False)
    return run


# ---------------------------------------------------------------------------------------------- code from a run
@pytest.mark.parametrize("how", ["torch.save", "inside a checkpoint", "bare pickle"])
@pytest.mark.parametrize("command", ["train --resume", "export", "export --verify", "export --format onnx"])
def test_a_planted_checkpoint_never_runs_and_is_one_line_naming_the_file(finished_run, tmp_path, capsys, how,
                                                                         command):
    run, marker = tmp_path / "run", tmp_path / "marker"
    run.mkdir()
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt"):
        (run / name).write_bytes((finished_run / name).read_bytes())
    plant(run / "checkpoint.pt", marker, how)
    out = tmp_path / ("actors.onnx" if "onnx" in command else "actors.hpz")
    argv = {"train --resume": ["train", "--out", str(run), "--resume"],
            "export": ["export", str(run), "--out", str(out)],
            "export --verify": ["export", str(run), "--out", str(out), "--verify"],
            "export --format onnx": ["export", str(run), "--out", str(out), "--format", "onnx"]}[command]
    code, _, err = cli(argv, capsys)
    assert not marker.exists(), "the checkpoint's code ran"
    one_line_error(code, err, str(run / "checkpoint.pt"))
    assert "Warning" not in err
    assert not out.exists()
    with pytest.raises(RunDirError, match="not a hapruned checkpoint"):
        trainer.read_checkpoint(run / "checkpoint.pt")
    assert not marker.exists()


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_checkpoints_hold_only_tensors_and_plain_values(tmp_path, algo):
    train(algo_config(algo, iterations=2, eval_every=2), tmp_path, progress=False)
    path = tmp_path / "checkpoint.pt"
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    saved = torch.load(path, weights_only=True)  # no allow-list needed
    assert saved["digest"] == trainer.checkpoint_digest(saved)


def as_old_format(path):
    """Rewrite a checkpoint as hapruned wrote them before the digest: no digest, the environments' random
    streams as a NumPy uint64 array."""
    saved = load_checkpoint(path.parent)
    saved.pop("digest", None)  # (none in checkpoints of that time)
    saved["algo"]["env_states"] = saved["algo"]["env_states"].numpy().copy()
    torch.save(saved, path)
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    assert "numpy.ndarray" in unsafe, unsafe  # really the old shape


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_an_old_format_checkpoint_still_resumes_bit_identically(tmp_path, monkeypatch, algo):
    config = algo_config(algo)
    with monkeypatch.context() as patch:
        from test_trainer import interrupt_at

        interrupt_at(patch, 5, KeyboardInterrupt(), algo)
        with pytest.raises(KeyboardInterrupt):
            train(config, tmp_path / "split", progress=False, checkpoint_every=2)
    as_old_format(tmp_path / "split" / "checkpoint.pt")
    train(config, tmp_path / "split", resume=True, progress=False, checkpoint_every=2)
    train(config, tmp_path / "whole", progress=False, checkpoint_every=2)
    assert_same_state(load_checkpoint(tmp_path / "split")["algo"], load_checkpoint(tmp_path / "whole")["algo"])
    assert without_timings(load_metrics(tmp_path / "split")) == without_timings(load_metrics(tmp_path / "whole"))


def test_an_old_format_checkpoint_still_exports(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt"):
        (run / name).write_bytes((finished_run / name).read_bytes())
    as_old_format(run / "checkpoint.pt")
    code, _, err = cli(["export", str(run), "--out", str(tmp_path / "old.hpz"), "--verify", "--json"], capsys)
    assert code == 0, err
    code, _, err = cli(["export", str(finished_run), "--out", str(tmp_path / "new.hpz")], capsys)
    assert code == 0, err
    assert (tmp_path / "old.hpz").read_bytes() == (tmp_path / "new.hpz").read_bytes()


# ---------------------------------------------------------------------------------------------- checksums
def flip_a_byte_inside(path, tensor):
    """Flip one byte in the middle of ``tensor``'s stored bytes in the checkpoint file at ``path``; the file
    stays a loadable torch file."""
    data = bytearray(path.read_bytes())
    raw = tensor.contiguous().view(torch.uint8).numpy().tobytes()
    at = data.find(raw)
    assert at >= 0 and data.find(raw, at + 1) < 0, "the tensor's bytes are not in the file exactly once"
    data[at + len(raw) // 2] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("command", ["train --resume", "export", "export --verify"])
def test_flipped_bytes_inside_an_actor_tensor_are_refused(finished_run, tmp_path, capsys, command):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt"):
        (run / name).write_bytes((finished_run / name).read_bytes())
    weight = load_checkpoint(run)["algo"]["actor"]["lstm.weight_hh_l0"]
    flip_a_byte_inside(run / "checkpoint.pt", weight)
    changed = torch.load(run / "checkpoint.pt", weights_only=True)["algo"]["actor"]["lstm.weight_hh_l0"]
    assert not torch.equal(changed, weight)  # torch itself reads the damaged file without complaint
    out = tmp_path / "actors.hpz"
    argv = {"train --resume": ["train", "--out", str(run), "--resume"],
            "export": ["export", str(run), "--out", str(out)],
            "export --verify": ["export", str(run), "--out", str(out), "--verify"]}[command]
    code, _, err = cli(argv, capsys)
    one_line_error(code, err, str(run / "checkpoint.pt"), "checksum")
    assert not out.exists()


def test_the_digest_covers_dtypes_shapes_keys_and_values_in_a_canonical_order():
    payload = {"a": torch.arange(6, dtype=torch.int32), "b": [1, 2.5, "x", None, True], "c": {0: torch.ones(2)}}
    digest = trainer.checkpoint_digest(payload)
    assert trainer.checkpoint_digest(dict(reversed(payload.items()))) == digest  # key order does not matter
    assert trainer.checkpoint_digest({**payload, "digest": "anything"}) == digest  # its own field is left out
    changes = [
        {**payload, "a": payload["a"].view(torch.float32)},  # same bytes, another dtype
        {**payload, "a": payload["a"].view(2, 3)},  # same bytes, another shape
        {**payload, "b": [1, 2.5, "x", None, 1]},  # True and 1 differ
        {**payload, "b": (1, 2.5, "x", None, True)},  # a tuple is not a list
        {**payload, "c": {"0": torch.ones(2)}},  # an int key is not a str key
        {**payload, "d": None},
    ]
    for changed in changes:
        assert trainer.checkpoint_digest(changed) != digest, changed
    with pytest.raises(TypeError, match="ndarray"):
        trainer.checkpoint_digest({"x": np.zeros(2)})


# ---------------------------------------------------------------------------------------------- damaged files
@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b"[1, 2, 3]\n", b'{"iteration": "3"}\n{"iteration": 4}\n',
                                     b'{"iteration": 1}\n7\n{"iteration": 3}\n'],
                         ids=["random bytes", "a list", "a string iteration", "a number"])
def test_a_damaged_metrics_file_is_a_one_line_error_on_resume(tmp_path, monkeypatch, capsys, content):
    _, run = interrupted_run(tmp_path, monkeypatch)
    (run / "metrics.jsonl").write_bytes(content)
    code, _, err = cli(["train", "--out", str(run), "--resume"], capsys)
    one_line_error(code, err, "metrics.jsonl", "damaged")


class FillsUp(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def writable(self):
        return True

    def write(self, data):
        if len(data) > self.room:
            self.f.write(bytes(data[:self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)


def test_a_disk_filling_during_a_checkpoint_write_keeps_the_last_one_and_resumes(tmp_path, capsys, monkeypatch):
    """torch.save's zip writer turns the full disk into a RuntimeError as it cleans up: still one line, and
    the last checkpoint (iteration 2) stays as it was for the resume."""
    run, real_save, calls = tmp_path / "run", torch.save, []

    def save(payload, f):
        calls.append(payload["iteration"])
        real_save(payload, FillsUp(f, 3000) if len(calls) == 2 else f)

    argv = ["train", "--out", str(run), *TINY, "--iterations", "4", "--checkpoint-every", "2", "--json"]
    with monkeypatch.context() as patch:
        patch.setattr(trainer.torch, "save", save)
        code, _, err = cli(argv, capsys)
    assert calls == [2, 4] and code == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "No space left on device" in err and str(run / "checkpoint.pt") in err
    assert load_checkpoint(run)["iteration"] == 2 and not list(run.glob("*.tmp"))
    code, _, err = cli(["train", "--out", str(run), "--resume", "--json", "--checkpoint-every", "2"], capsys)
    assert code == 0, err
    code, _, err = cli([*argv[:2], str(tmp_path / "whole"), *argv[3:]], capsys)
    assert code == 0, err
    assert_same_state(load_checkpoint(run)["algo"], load_checkpoint(tmp_path / "whole")["algo"])


# ---------------------------------------------------------------------------------------------- one writer
def spawn(argv, **kwargs):
    return subprocess.Popen([sys.executable, *argv], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, **kwargs)


def wait_for(condition, child, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert child.poll() is None, f"{what}: the child exited: {child.stderr.read()}"
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def stop(child):
    if child.poll() is None:
        child.kill()
    child.communicate(timeout=60)


LONG = [*TINY, "--iterations", "100000", "--eval-every", "100000", "--checkpoint-every", "1", "--json"]


def test_a_second_writer_is_refused_naming_the_first_and_changes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    first = spawn(["-m", "hapruned", "train", "--out", str(run), "--resume", "--seed", "0", *LONG])
    try:
        wait_for(lambda: len(load_metrics(run)) >= 2, first, "the first training did not start")
        config = (run / "config.json").read_bytes()
        for argv in (["train", "--out", str(run), "--seed", "1", *LONG],  # a new run into the same directory
                     ["train", "--out", str(run), "--resume", "--json"],  # a second resume of it
                     ["train", "--out", str(run), "--resume", "--seed", "1", *LONG]):
            code, _, err = cli(argv, capsys)
            one_line_error(code, err, str(run), "in use", f"pid {first.pid}", socket.gethostname(), "train")
        assert (run / "config.json").read_bytes() == config
        assert first.poll() is None  # the first goes on, its files its own
        iteration = len(load_metrics(run))
        wait_for(lambda: len(load_metrics(run)) > iteration + 1, first, "the first training stopped")
        assert json.loads(config)["seed"] == 0 and load_checkpoint(run)["config"]["seed"] == 0
    finally:
        stop(first)


def test_two_writers_started_together_one_runs(tmp_path):
    run = tmp_path / "run"
    children = [spawn(["-m", "hapruned", "train", "--out", str(run), "--seed", str(seed), *TINY, "--iterations", "3",
                       "--json"]) for seed in (0, 1)]
    try:
        results = [(child.wait(timeout=300), child.stderr.read()) for child in children]
    finally:
        for child in children:
            stop(child)
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "Traceback" not in refused and ("in use by pid" in refused or "not empty" in refused), refused
    winner = [0, 1][[code for code, _ in results].index(0)]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["seeds"] == [winner] and load_checkpoint(run)["config"]["seed"] == winner
    assert not (run / LOCK_FILE).exists()


HOLD = """
import sys, time
from hapruned.storage import DirectoryLock
lock = DirectoryLock(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def test_a_holder_killed_with_sigkill_leaves_a_lock_file_that_does_not_block(tmp_path, monkeypatch):
    config, run = interrupted_run(tmp_path, monkeypatch)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(RunDirError, match=f"in use by pid {holder.pid}"):
            train(config, run, resume=True, progress=False, checkpoint_every=2)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    finally:
        stop(holder)
    assert (run / LOCK_FILE).exists()  # what the killed holder left
    train(config, run, resume=True, progress=False, checkpoint_every=2)
    assert len(load_metrics(run)) == config.iterations and not (run / LOCK_FILE).exists()


@pytest.mark.parametrize("content", [b"", b"{not json", b"[" * 4000, b'{"pid": 1, "host": "x\\nTraceback", '
                                     b'"command": "c\\u001b[31m", "started": "s"}'],
                         ids=["empty", "not JSON", "nested 4000 deep", "control characters"])
def test_a_stale_or_damaged_lock_file_does_not_block_and_is_printed_on_one_line(tmp_path, monkeypatch, content):
    config, run = interrupted_run(tmp_path, monkeypatch)
    (run / LOCK_FILE).write_bytes(content)
    with DirectoryLock(run):  # nobody held it: taken over
        replaced = json.loads((run / LOCK_FILE).read_text())
        assert replaced["pid"] == os.getpid()
    (run / LOCK_FILE).write_bytes(content)
    fd = os.open(run / LOCK_FILE, os.O_RDWR)
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)  # someone holds it, and its file says what it says
        with pytest.raises(RunDirError) as refused:
            train(config, run, resume=True, progress=False)
        assert len(str(refused.value).splitlines()) == 1 and "\x1b" not in str(refused.value)
    finally:
        os.close(fd)
    train(config, run, resume=True, progress=False, checkpoint_every=2)
    assert len(load_metrics(run)) == config.iterations


RACE = """
import sys, time
from hapruned.storage import DirectoryLock, DirectoryLocked
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
try:
    lock = DirectoryLock(sys.argv[1])
    print("won", flush=True)
    time.sleep(3)
except DirectoryLocked:
    print("lost", flush=True)
"""


@pytest.mark.parametrize("stale", [False, True], ids=["no lock file", "a stale lock file"])
def test_of_processes_racing_for_a_lock_exactly_one_wins(tmp_path, stale):
    if stale:
        (tmp_path / LOCK_FILE).write_text('{"pid": 1, "host": "gone", "command": "x", "started": "then"}')
    start = time.time() + 2
    children = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path), str(start)], cwd=REPO,
                                 stdout=subprocess.PIPE, text=True) for _ in range(6)]
    try:
        outcomes = sorted(child.communicate(timeout=120)[0].strip() for child in children)
    finally:
        for child in children:
            stop(child)
    assert outcomes == ["lost"] * 5 + ["won"], outcomes
    assert os.listdir(tmp_path) == [LOCK_FILE]  # the winner's, and no temporary file


def test_the_lock_is_held_by_reproduce_and_sweep_for_their_output_directory(tmp_path, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        for argv in (["sweep", "--out", str(out), "--budget", "smoke", "--seeds", "0", "--grid", "i_prune=1,2"],
                     ["reproduce", "--out", str(out), "--budget", "smoke", "--seeds", "0", "--setups", "A",
                      "--methods", "aloha"]):
            code, _, err = cli(argv, capsys)
            one_line_error(code, err, "--out", "in use", f"pid {holder.pid}")
        assert os.listdir(out) == [LOCK_FILE]  # the refused commands wrote nothing
    finally:
        stop(holder)


def test_the_lock_of_a_directory_that_cannot_be_written_is_one_line(capsys):
    with pytest.raises(OSError):
        DirectoryLock("/proc")
    code, _, err = cli(["train", "--out", "/proc/self", "--resume", *TINY], capsys)
    assert code == 2 and "Traceback" not in err and "/proc/self" in err.strip().splitlines()[-1]


def test_a_lock_refusal_names_this_process_when_it_holds_the_lock(tmp_path):
    with DirectoryLock(tmp_path):
        with pytest.raises(DirectoryLocked, match=rf"pid {os.getpid()} on {re.escape(socket.gethostname())} \(.*\), "
                                                  rf"started "):
            DirectoryLock(tmp_path)
    assert os.listdir(tmp_path) == []
    storage.DirectoryLock(tmp_path).release()  # free again
