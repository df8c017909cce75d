"""Hostile input to the commands: thread counts, integers and sparsities beyond what the code holds, damaged
run and grid files, unusable output directories, Ray addresses that lead nowhere, Ctrl-C while the commands
load and a parent killed outright. Each is refused in one line (no traceback, no crash, no usage dump),
before anything is written; no process outlives its command."""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

import hapruned
from hapruned import resources
from hapruned.algos import trainer
from hapruned.algos.config import TrainConfig
from hapruned.algos.models import GroupedActor
from hapruned.cli import main
from hapruned.env.encoding import observation_size
from hapruned.experiments import grid
from hapruned.ops import magnitude_prune_mask
from in_process import cli

REPO = Path(__file__).resolve().parents[1]
TINY = ["--n-users", "2", "--n-channels", "2", "--horizon", "4", "--hidden-size", "8", "--iterations", "2",
        "--envs-per-iteration", "2", "--minibatches", "1", "--epochs", "1", "--i-prune", "1", "--eval-every", "2",
        "--eval-episodes", "2", "--threads", "1"]
TINY_BUDGET = dict(n_users=2, n_channels=2, horizon=8, hidden_size=16, iterations=4, envs_per_iteration=2,
                   minibatches=1, epochs=1, i_prune=1, eval_every=2, eval_episodes=3)
GRID = ["--budget", "tiny", "--seeds", "0", "--jobs", "1", "--threads", "1"]
INT64_MAX = str(2**63 - 1)


@pytest.fixture(autouse=True)
def tiny_budget(monkeypatch):
    monkeypatch.setitem(grid.BUDGETS, "tiny", grid.Budget("fast", TINY_BUDGET, seeds=(0, 1), description="tiny"))


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Made once: a finished tiny training run, its exported .hpz, and a finished reproduce grid of one
    scheme and one learned method (setup A, seed 0)."""
    root = tmp_path_factory.mktemp("made")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(grid.BUDGETS, "tiny", grid.Budget("fast", TINY_BUDGET, seeds=(0, 1), description="tiny"))
        assert main(["train", "--out", str(root / "run"), "--json", *TINY]) == 0
        assert main(["export", str(root / "run"), "--out", str(root / "actors.hpz")]) == 0
        assert main(["reproduce", "--out", str(root / "grid"), "--setups", "A", "--methods", "aloha,linear", *GRID]) == 0
    return root


def copy_of(made, name, tmp_path) -> Path:
    (shutil.copytree if (made / name).is_dir() else shutil.copy2)(made / name, tmp_path / name)
    return tmp_path / name


def one_line_error(code, err, *words, status=2):
    """The command exited with ``status`` after printing one line to stderr, an error naming ``words``."""
    assert code == status, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], (word, lines[0])


def refuse_to_train(monkeypatch):
    """Make a refusal that comes too late fail at once (instead of training for ever)."""
    def train(*args, **kwargs):
        raise AssertionError("training started: the command should have refused its flags")
    monkeypatch.setattr(trainer, "train", train)


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


# ---------------------------------------------------------------------------------------------- threads
@pytest.mark.parametrize("value", ["0", str(hapruned.available_cores() + 1), str(10**20)])
def test_threads_outside_the_cores_are_refused_naming_the_range(tmp_path, capsys, monkeypatch, value):
    refuse_to_train(monkeypatch)
    code, _, err = cli(["train", "--out", str(tmp_path / "run"), *TINY, "--threads", value], capsys)
    one_line_error(code, err, "--threads", f"[1, {hapruned.available_cores()}]")
    assert not (tmp_path / "run").exists()


def test_a_hundred_thousand_threads_are_refused_not_a_crash(tmp_path, made):
    """In a subprocess: with that many threads the thread pools crash the process (exit 139)."""
    for argv in (["train", "--out", str(tmp_path / "run"), *TINY[:-2]], ["deploy-bench", str(made / "actors.hpz")]):
        result = subprocess.run([sys.executable, "-m", "hapruned", *argv, "--threads", "100000"], cwd=REPO,
                                capture_output=True, text=True, timeout=300)
        one_line_error(result.returncode, result.stderr, "--threads", "the cores this process may use")
    assert not (tmp_path / "run").exists()


def test_set_num_threads_refuses_more_threads_than_cores():
    cores = hapruned.available_cores()
    for n in (0, cores + 1, 10**20, 1.0):
        with pytest.raises(ValueError, match=rf"n must be an integer in \[1, {cores}\]"):
            hapruned.set_num_threads(n)


def test_a_local_ray_instance_gets_no_more_threads_than_cores(tmp_path, capsys, monkeypatch):
    from hapruned.experiments import executors

    monkeypatch.setattr(executors.RayExecutor, "map", lambda self, runs: pytest.fail("Ray was started"))
    code, _, err = cli(["sweep", "--out", str(tmp_path / "out"), "--grid", "i_prune=1", "--executor", "ray",
                        "--threads", str(hapruned.available_cores() + 1)], capsys)
    one_line_error(code, err, "--threads")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("flag", ["--iterations", "--horizon", "--eval-episodes", "--envs-per-iteration", "--period",
                                  "--eval-every", "--i-prune", "--hidden-size", "--checkpoint-every"])
def test_integers_beyond_64_bits_are_refused_naming_the_bound(tmp_path, capsys, monkeypatch, flag):
    refuse_to_train(monkeypatch)
    code, _, err = cli(["train", "--out", str(tmp_path / "run"), *TINY, flag, str(2**63)], capsys)
    one_line_error(code, err, flag, INT64_MAX)


@pytest.mark.parametrize("argv", [["baselines", "--episodes"], ["baselines", "--num-envs"],
                                  ["reproduce", "--out", "x", "--executor", "ray", "--ray-address", "10.0.0.1:6379", "--jobs"],
                                  ["deploy-bench", "x.hpz", "--steps"]])
def test_other_commands_refuse_integers_beyond_64_bits(capsys, argv):
    code, _, err = cli([*argv, str(2**64)], capsys)
    one_line_error(code, err, argv[-1], INT64_MAX)


def random_scores(size):
    return torch.rand(1, size, generator=torch.Generator().manual_seed(size))


def test_a_sparsity_that_prunes_every_weight_is_refused_naming_the_largest(tmp_path, capsys, monkeypatch):
    actor = GroupedActor(1, observation_size(2), 8, 2, 3)  # TINY's actor: K = 2, hidden 8, 2 layers
    sizes = [dict(actor.named_parameters())[name][0].numel() for name in actor.prunable_names]
    for per_matrix, weights in (([], sum(sizes)), (["--per-matrix"], min(sizes))):
        largest = (weights - 1) / weights
        # the pruner's own count: the largest allowed leaves one weight, anything that rounds to all leaves none
        assert int(magnitude_prune_mask(random_scores(weights), largest).sum()) == 1
        too_far = (weights - 0.25) / weights
        assert int(magnitude_prune_mask(random_scores(weights), too_far).sum()) == 0
        TrainConfig(n_users=2, n_channels=2, hidden_size=8, sparsity=largest, per_matrix=bool(per_matrix))
        refuse_to_train(monkeypatch)
        code, _, err = cli(["train", "--out", str(tmp_path / "run"), *TINY, *per_matrix, "--sparsity", str(too_far)],
                           capsys)
        one_line_error(code, err, "--sparsity", f"at most (M - 1) / M = {largest!r}", f"M = {weights:,}")
        assert not (tmp_path / "run").exists()


def test_p0_above_the_target_is_one_line_before_anything_is_written(tmp_path, capsys):
    code, _, err = cli(["train", "--out", str(tmp_path / "run"), *TINY, "--p0", "0.9", "--sparsity", "0.5"], capsys)
    one_line_error(code, err, "--p0", "--sparsity 0.5")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------- messages
@pytest.mark.parametrize("argv", [["train", "--bogus"], ["train", "--out", "x", "--iterations", "many"],
                                  ["sweep", "--out", "x"], [], ["trian"], ["train", "--out", "x", "--setup", "Z"]])
def test_argparse_refusals_are_one_line_with_a_help_hint(capsys, argv):
    code, _, err = cli(argv, capsys)
    one_line_error(code, err, "hapruned", "--help")


def test_an_unknown_config_key_is_named_with_the_closest_field(made, tmp_path, capsys):
    run = copy_of(made, "run", tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["hiden_size"] = config.pop("hidden_size")
    (run / "config.json").write_text(json.dumps(config))
    code, _, err = cli(["train", "--out", str(run), "--resume"], capsys)
    one_line_error(code, err, "config.json", "unknown field 'hiden_size' (did you mean 'hidden_size'?)")
    assert "--init--" not in err
    code, _, err = cli(["sweep", "--out", str(tmp_path / "sweep"), "--grid", "i_prun=1,2"], capsys)
    one_line_error(code, err, "--grid i_prun", "did you mean 'i_prune'")


# ---------------------------------------------------------------------------------------------- sweep grids
@pytest.mark.parametrize("flags, words", [
    (["--grid", "p0=0,0.9", "--set", "sparsity=0.5"], ["--grid point p0=0.9", "p0 must be at most"]),
    (["--grid", "hidden_size=8,100000000"], ["--grid point hidden_size=100000000", "memory"]),
    (["--grid", "sparsity=0.5,0.999999"], ["--grid point sparsity=0.999999", "at most"]),
])
def test_every_grid_point_is_checked_before_any_run_starts(tmp_path, capsys, monkeypatch, flags, words):
    refuse_to_train(monkeypatch)
    out = tmp_path / "sweep"
    code, _, err = cli(["sweep", "--out", str(out), *GRID, *flags], capsys)
    one_line_error(code, err, *words)
    assert not out.exists()


def test_per_channel_pu_prob_lists_can_be_swept(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--out", str(out), *GRID, "--grid", "pu_prob=0.1/0.3,0.2"]) == 0
    swept = {path.parent.parent.name: json.loads(path.read_text())["pu_prob"]
             for path in (out / "runs").glob("*/seed-0/config.json")}
    assert swept == {"pu_prob=0.1_0.3": [0.1, 0.3], "pu_prob=0.2": 0.2}
    assert "| 0.1_0.3 | 1/1 |" in (out / "sweep.md").read_text()


# ---------------------------------------------------------------------------------------------- bounds
@pytest.mark.parametrize("damage", [b"\x00\xff\xfe", b"", b"[1, 2, 3]", b'{"final_eval_reward_per_seed": "x"}',
                                    {"eval_episodes": 10**15}, {"eval_seed": -1}, {"wall_time_s": "long"},
                                    {"final_eval_reward_per_seed": [1.0, 2.0]}])
def test_a_damaged_summary_is_one_line_on_bounds(made, tmp_path, capsys, damage):
    run = copy_of(made, "run", tmp_path)
    if isinstance(damage, dict):
        damage = json.dumps({**json.loads((run / "summary.json").read_text()), **damage}).encode()
    (run / "summary.json").write_bytes(damage)
    code, _, err = cli(["bounds", str(run)], capsys)
    one_line_error(code, err, "RUN_DIR", "summary.json")


def test_bounds_counts_a_directory_given_twice_once(made, capsys):
    run = made / "run"
    code, out, err = cli(["bounds", "--json", str(run), f"{run}/", str(run / ".." / run.name)], capsys)
    assert code == 0 and json.loads(out)[0]["seeds"] == 1
    assert err.count("counted once") == 2


# ---------------------------------------------------------------------------------------------- report
@pytest.mark.parametrize("target, damage", [
    ("runs/A/linear/seed-0/summary.json", b"\xff\xfe"),
    ("runs/A/linear/seed-0/summary.json", b'{"final_eval_reward": "high"}'),
    ("runs/A/aloha/seed-0/summary.json", b'{"final_eval_reward": 1.0, "sparsity_per_agent": 7}'),
    ("runs/A/linear/seed-0/metrics.jsonl", b'[1, 2, 3]\n{"iteration": 2}\n'),
    ("runs/A/linear/seed-0/metrics.jsonl", b'{"iteration": "two"}\n{"iteration": 2}\n'),
    ("runs/A/linear/seed-0/metrics.jsonl", b'{"iteration": 2, "sparsity": "dense"}\n{"iteration": 3}\n'),
    ("runs/A/linear/seed-0/metrics.jsonl", bytes(range(256))),
    ("runs/A/linear/seed-0/config.json", b'{"method": 5}'),
    ("experiment.json", b"\x00"),
    ("experiment.json", b'{"command": "reproduce", "budget": "tiny", "seeds": "x", "setups": ["A"], "methods": ["aloha"]}'),
    ("experiment.json", b'{"command": "reproduce", "budget": "tiny", "seeds": [0], "setups": ["../.."], "methods": ["aloha"]}'),
    ("experiment.json", b'{"command": "sweep", "budget": "tiny", "seeds": [0], "grid": {"i_prune": 5}, "fixed": {}}'),
    ("experiment.json", b'{"command": "sweep", "budget": "tiny", "seeds": [0], "grid": {"i_prune": ["/x"]}, "fixed": {}}'),
])
def test_a_damaged_run_or_manifest_is_one_line_on_report(made, tmp_path, capsys, target, damage):
    grid_dir = copy_of(made, "grid", tmp_path)
    (grid_dir / target).write_bytes(damage)
    code, _, err = cli(["report", str(grid_dir)], capsys)
    one_line_error(code, err, "DIR", Path(target).name)


def test_report_names_the_runs_that_are_missing(made, tmp_path, capsys):
    grid_dir = copy_of(made, "grid", tmp_path)
    shutil.rmtree(grid_dir / "runs")
    code, out, _ = cli(["report", str(grid_dir)], capsys)
    assert code == 0 and "| 0/1 |" in out
    assert f"Missing (2 runs, e.g. {grid_dir / 'runs'}" in out and "run the same command again" in out


# ---------------------------------------------------------------------------------------------- --out
@pytest.mark.parametrize("command", [["reproduce", "--setups", "A", "--methods", "aloha"], ["sweep", "--grid", "i_prune=1"]])
def test_an_out_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch, command):
    refuse_to_train(monkeypatch)
    code, _, err = cli([*command, *GRID, "--out", "/sys/hapruned-out"], capsys)  # sysfs: no one may create it
    one_line_error(code, err, "--out /sys/hapruned-out", "cannot")

    def read_only(path, text):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(grid, "write_atomic", read_only)  # an existing directory on a read-only mount
    code, _, err = cli([*command, *GRID, "--out", str(tmp_path)], capsys)
    one_line_error(code, err, f"--out {tmp_path}", "Read-only file system")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- Ray
def test_a_ray_address_that_is_no_address_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "out"
    for address in ("foo", "", "10.0.0.1:99999", "10.0.0.1:"):
        code, _, err = cli(["sweep", "--out", str(out), "--grid", "i_prune=1", "--executor", "ray",
                            "--ray-address", address], capsys)
        one_line_error(code, err, "--ray-address must be HOST:PORT")
    assert not out.exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_ray_cluster_where_nothing_listens_is_one_line_naming_the_address(tmp_path, capsys, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setattr(ray, "init", lambda **kwargs: pytest.fail("ray.init retries such an address for ever"))
    address, out = f"127.0.0.1:{free_port()}", tmp_path / "out"
    code, _, err = cli(["sweep", "--out", str(out), *GRID, "--grid", "i_prune=1", "--executor", "ray",
                        "--ray-address", address], capsys)
    one_line_error(code, err, f"cannot reach the Ray cluster at {address}", "ray start --head", status=1)
    assert not out.exists()


def test_a_ray_cluster_that_refuses_the_client_names_token_authentication(tmp_path, capsys, monkeypatch):
    """What Ray 2.60 raises when the cluster wants a token the client does not send (its C++ log lines aside)."""
    ray = pytest.importorskip("ray")

    def refuse(address, **kwargs):
        raise ConnectionError(f"Failed to connect to Ray cluster at {address}")

    monkeypatch.setattr(ray, "init", refuse)
    with socket.create_server(("127.0.0.1", 0)) as listening:  # something answers at the address
        address, out = f"127.0.0.1:{listening.getsockname()[1]}", tmp_path / "out"
        code, _, err = cli(["sweep", "--out", str(out), *GRID, "--grid", "i_prune=1", "--executor", "ray",
                            "--ray-address", address], capsys)
    one_line_error(code, err, f"cannot connect to the Ray cluster at {address}", "RAY_AUTH_MODE=token",
                   "RAY_AUTH_TOKEN", status=1)
    assert not out.exists()


def test_more_threads_than_any_ray_node_has_are_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # a cluster joined earlier in this process
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 4.0}},
                                               {"Alive": False, "Resources": {"CPU": 64.0}}])
    monkeypatch.setattr(ray, "remote", lambda *args: pytest.fail("a task was submitted"))
    out = tmp_path / "out"
    code, _, err = cli(["sweep", "--out", str(out), "--seeds", "0", "--grid", "i_prune=1", "--executor", "ray",
                        "--ray-address", "10.0.0.1:6379", "--threads", "8"], capsys)
    one_line_error(code, err, "--threads 8", "has 4")
    assert not out.exists()


def test_a_local_ray_instance_starts_beside_a_cluster_that_ray_start_runs(tmp_path, capsys, monkeypatch):
    """ray.init() without an address joins the cluster `ray start` left on this machine (and then refuses
    the CPU count of a local instance); --executor ray without --ray-address starts its own."""
    pytest.importorskip("ray")
    # where Ray records the cluster it started (RAY_TMPDIR) instead of /tmp/ray: a short path, as Ray's
    # sockets live under it
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    # none of the RAY_ variables that an earlier ray.init() in this process set (RAY_AUTH_MODE=token)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
           "RAY_TMPDIR": str(temp), "HOME": str(tmp_path), "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--port", str(free_port()),
                             "--num-cpus", "1", "--include-dashboard", "false", "--block"], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not (temp / "ray" / "ray_current_cluster").exists():
            assert head.poll() is None and time.monotonic() < deadline, "ray start did not start a cluster"
            time.sleep(0.2)
        monkeypatch.setenv("RAY_TMPDIR", str(temp))
        monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        out = tmp_path / "out"
        code, stdout, err = cli(["sweep", "--out", str(out), *GRID[:4], "--grid", "i_prune=1", "--executor", "ray",
                                 "--jobs", "1"], capsys)
        assert code == 0, err
        assert "on a local Ray instance" in stdout and (out / "sweep.csv").exists()
    finally:
        kill_group(head)
        shutil.rmtree(temp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- signals
@pytest.mark.parametrize("loading", ["numpy", "libtorch_cpu"])
def test_ctrl_c_while_the_commands_load_exits_130_without_a_traceback(tmp_path, loading):
    child = subprocess.Popen([sys.executable, "-m", "hapruned", "train", "--out", str(tmp_path / "run"), *TINY],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True,  # SIGINT as a terminal's Ctrl-C: not ignored, as in a background job
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        maps, deadline = Path(f"/proc/{child.pid}/maps"), time.monotonic() + 120
        while loading not in maps.read_text():  # the commands' modules are being imported
            assert child.poll() is None and time.monotonic() < deadline, f"the command never loaded {loading}"
            time.sleep(0.002)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=120)
    finally:
        kill_group(child)
    assert child.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].endswith(": interrupted"), err


# Ctrl-C met inside C extensions, in a command run as `python -m` runs the command line
INTERRUPTED = """
import ctypes, os, signal, sys, time
import hapruned.algos.command as command
from hapruned.cli import main

def in_pyrun(args, parser):
    # where torch runs Python through PyRun_String (pybind11's eval): CPython then marks itself to die
    # by SIGINT at exit, whatever status the program returns
    run = ctypes.pythonapi.PyRun_String
    run.restype, run.argtypes = ctypes.py_object, [ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object]
    run(b"raise KeyboardInterrupt", 257, {}, {})  # 257: Py_file_input

def in_an_import(args, parser):
    # as numpy's C module, interrupted while it loads, fails with an ImportError that hides the interrupt
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(60)
    except KeyboardInterrupt:
        raise ImportError('PyCapsule_Import could not import module "datetime"') from None

command.run_train = globals()[sys.argv[1]]
sys.exit(main(["train", "--out", "x"]))
"""


@pytest.mark.parametrize("where", ["in_pyrun", "in_an_import"])
def test_an_interrupt_inside_an_extension_still_exits_130_in_one_line(tmp_path, where):
    (tmp_path / "interrupted_cli.py").write_text(INTERRUPTED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "interrupted_cli", where], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip() == "hapruned train: interrupted"


def descendants(group: int) -> dict[int, str]:
    """The live processes of process group ``group``: pid -> command line (zombies are dead)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            state, _, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
            if entry.name.isdigit() and int(pgrp) == group and state != "Z":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:100]
        except (OSError, ValueError):
            continue  # not a process, or gone meanwhile
    return found


# the real command, with two cores granted whatever this machine has (its workers run one thread each)
REPRODUCE = ("import sys, hapruned; hapruned.available_cores = lambda: 2; from hapruned.cli import main; "
             "sys.exit(main(sys.argv[1:]))")


def test_a_killed_grid_takes_its_workers_and_the_resource_tracker_with_it(tmp_path):
    out = tmp_path / "grid"
    # runs of the fast budget, minutes each: they are still training when the parent is killed
    argv = ["reproduce", "--budget", "fast", "--out", str(out), "--setups", "A", "--methods", "dense,linear",
            "--seeds", "0", "--jobs", "2", "--threads", "1"]
    parent = subprocess.Popen([sys.executable, "-c", REPRODUCE, *argv], cwd=REPO, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while len(list(out.glob("runs/A/*/seed-0/config.json"))) < 2:  # both workers are training
            assert parent.poll() is None and time.monotonic() < deadline, "the workers never started their runs"
            time.sleep(0.1)
        before = descendants(parent.pid)
        assert len(before) >= 4, before  # the parent, its two workers and the resource tracker
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while descendants(parent.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not descendants(parent.pid), f"outlived their parent: {descendants(parent.pid)}"
    finally:
        kill_group(parent)


# ---------------------------------------------------------------------------------------------- memory
RLIMIT_SCRIPT = """
import resource
from hapruned import resources
from hapruned.algos.config import TrainConfig
from hapruned.algos.trainer import training_memory

# about 1.8 GB for the evaluation's environments and states
config = TrainConfig(n_users=2, n_channels=2, hidden_size=8, eval_episodes=1_500_000)
with open("/proc/self/status") as f:
    mapped = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (mapped + 2**30, resource.getrlimit(resource.RLIMIT_AS)[1]))
print(resources.available_memory())
try:
    resources.check_memory(training_memory(config))
    print("accepted")
except resources.MemoryEstimateError as err:
    print("refused:", err)
"""


def test_the_memory_estimate_honours_the_address_space_limit():
    result = subprocess.run([sys.executable, "-c", RLIMIT_SCRIPT], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    available, verdict = result.stdout.strip().splitlines()
    assert int(available) <= 2**30
    assert verdict.startswith("refused:") and "--eval-episodes" in verdict


def write_tree(root: Path, files: dict) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_memory_estimate_honours_cgroup_limits(tmp_path, monkeypatch):
    # cgroup v2: the limit of an ancestor counts, its reclaimable file cache does not
    write_tree(tmp_path / "v2", {
        "proc": "0::/slice/job\n",
        "fs/slice/memory.max": "3000000000\n", "fs/slice/memory.current": "2000000000\n",
        "fs/slice/memory.stat": "anon 1\ninactive_file 500000000\n",
        "fs/slice/job/memory.max": "max\n", "fs/slice/job/memory.current": "100\n",
    })
    assert resources._cgroup_room(str(tmp_path / "v2/proc"), str(tmp_path / "v2/fs")) == [1_500_000_000]
    # cgroup v1: the lower of the group's limit and its ancestors' (hierarchical_memory_limit)
    write_tree(tmp_path / "v1", {
        "proc": "5:cpu,cpuacct:/job\n4:memory:/job\n0::/\n",
        "fs/memory/job/memory.limit_in_bytes": "1000000000\n", "fs/memory/job/memory.usage_in_bytes": "400000000\n",
        "fs/memory/job/memory.stat": "total_inactive_file 100000000\nhierarchical_memory_limit 800000000\n",
    })
    assert resources._cgroup_room(str(tmp_path / "v1/proc"), str(tmp_path / "v1/fs")) == [500_000_000]
    monkeypatch.setattr(resources, "_cgroup_room", lambda: [123_456])
    assert resources.available_memory() == 123_456
