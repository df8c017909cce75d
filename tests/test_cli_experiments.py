"""``hapruned reproduce``, ``hapruned sweep`` and ``hapruned report``: skip and resume, errors, Ctrl-C,
the Ray executor."""

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hapruned
from hapruned.algos import trainer
from hapruned.cli import main
from hapruned.experiments import grid
import processes

TINY_BUDGET = dict(n_users=2, n_channels=2, horizon=8, hidden_size=16, iterations=4, envs_per_iteration=2,
                   minibatches=1, epochs=1, i_prune=1, eval_every=2, eval_episodes=3)
TIMING_KEYS = {"wall_time_s"}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def tiny_budget(monkeypatch):
    monkeypatch.setitem(grid.BUDGETS, "tiny", grid.Budget("fast", TINY_BUDGET, seeds=(0, 1), description="tiny"))


def reproduce(out, *flags):
    return main(["reproduce", "--budget", "tiny", "--out", str(out), "--setups", "A", "--jobs", "1", "--threads", "1", *flags])


def summaries(out) -> dict:
    """Every run's summary.json under ``out``, without timings and paths."""
    found = {}
    for path in sorted(Path(out, "runs").rglob("summary.json")):
        summary = json.loads(path.read_text())
        found[str(path.parent.relative_to(out))] = {k: v for k, v in summary.items() if k not in ("wall_time_s", "out_dir")}
    return found


def exit_code(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err


def test_reproduce_skips_finished_runs_and_rebuilds_the_outputs(tmp_path, capsys):
    assert reproduce(tmp_path, "--methods", "aloha,linear") == 0
    out = capsys.readouterr().out
    assert "4 runs: 0 finished" in out and "| A | linear (`linear`) | 95% masked | 2/2 |" in out
    outputs = ["table1.md", "table1.csv", "fig1_sparsity.png", "fig2_training.png", "report.json"]
    assert all((tmp_path / name).stat().st_size > 0 for name in outputs)
    first = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("summary.json")}
    (tmp_path / "table1.md").unlink()

    assert reproduce(tmp_path, "--methods", "aloha,linear") == 0
    out = capsys.readouterr().out
    assert "4 runs: 4 finished, 0 to resume or retry, 0 to start" in out and "done " not in out
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("summary.json")} == first
    assert (tmp_path / "table1.md").exists()

    (tmp_path / "table1.csv").unlink()
    assert main(["report", str(tmp_path)]) == 0
    assert "linear (`linear`)" in capsys.readouterr().out and (tmp_path / "table1.csv").exists()


def test_an_interrupted_grid_resumes_to_the_same_results(tmp_path, capsys, monkeypatch):
    assert reproduce(tmp_path / "whole", "--methods", "linear", "--seeds", "0") == 0
    original = trainer.IAGCPPO.train_iteration

    def interrupted(self, iteration):
        if iteration == 3:
            raise KeyboardInterrupt
        return original(self, iteration)

    with monkeypatch.context() as patch:
        patch.setattr(trainer.IAGCPPO, "train_iteration", interrupted)
        assert reproduce(tmp_path / "split", "--methods", "linear", "--seeds", "0") == 130
    captured = capsys.readouterr()
    assert "run the same command again to resume" in captured.err
    run_dir = tmp_path / "split" / "runs" / "A" / "linear" / "seed-0"
    assert grid.run_status(run_dir) == "started" and len(trainer.load_metrics(run_dir)) == 2

    assert reproduce(tmp_path / "split", "--methods", "linear", "--seeds", "0") == 0
    assert "1 to resume or retry" in capsys.readouterr().out
    assert summaries(tmp_path / "split") == summaries(tmp_path / "whole")


def test_a_directory_of_another_budget_is_refused_before_any_run(tmp_path, capsys, monkeypatch):
    assert reproduce(tmp_path, "--methods", "linear", "--seeds", "0") == 0
    monkeypatch.setitem(grid.BUDGETS, "tiny", grid.Budget("fast", {**TINY_BUDGET, "iterations": 6}))
    code, err = exit_code(["reproduce", "--budget", "tiny", "--out", str(tmp_path), "--setups", "A",
                           "--methods", "linear,dense", "--seeds", "0", "--jobs", "1"], capsys)
    assert code == 2 and "--out" in err and "iterations" in err
    assert not (tmp_path / "runs" / "A" / "dense").exists()


@pytest.mark.parametrize("flags, message", [
    (["--methods", "linear,quadratic"], "--methods value quadratic; choose from aloha,"),
    (["--setups", "A,C"], "--setups value C; choose from A, B"),
    (["--jobs", "0"], "--jobs must be an integer in [1, 2]"),
    (["--threads", "0"], "--threads must be an integer in [1, 2]"),
    (["--jobs", "2", "--threads", "2"], "exceeds the 2 cores"),
    (["--ray-address", "10.0.0.1:6379"], "--ray-address needs --executor ray"),
    (["--seeds", "x"], "--seeds"),
    (["--seeds", str(2**63)], "--seeds must be an integer in [0, 9223372036854775807]"),
])
def test_bad_flags_exit_2_naming_the_flag(tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.setattr(hapruned, "available_cores", lambda: 2)
    code, err = exit_code(["reproduce", "--out", str(tmp_path / "out"), *flags], capsys)
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists()


def test_threads_alone_size_the_jobs_to_the_cores(monkeypatch):
    from hapruned.experiments.options import executor_from_args

    monkeypatch.setattr(hapruned, "available_cores", lambda: 4)
    args = argparse.Namespace(jobs=None, threads=2, executor="local", ray_address=None)
    executor = executor_from_args(args, None)
    assert (executor.jobs, executor.threads) == (2, 2)


def test_a_missing_ray_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    code, err = exit_code(["reproduce", "--out", str(tmp_path), "--executor", "ray"], capsys)
    assert code == 2 and "--executor ray" in err and 'pip install "hapruned[ray]"' in err


def test_report_of_a_directory_without_a_grid_exits_2(tmp_path, capsys):
    code, err = exit_code(["report", str(tmp_path)], capsys)
    assert code == 2 and "experiment.json" in err


def test_sweep_writes_a_table_and_a_plot_per_field(tmp_path, capsys):
    argv = ["sweep", "--budget", "tiny", "--out", str(tmp_path), "--seeds", "0,1", "--jobs", "1", "--threads", "1",
            "--grid", "i_prune=1,2", "amplitude=0,0.1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| i_prune | amplitude | seeds |" in out
    with open(tmp_path / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["i_prune"], r["amplitude"], r["n"]) for r in rows] == [
        ("1", "0.0", "2"), ("1", "0.1", "2"), ("2", "0.0", "2"), ("2", "0.1", "2")]
    for row in rows:
        rewards = [json.loads((tmp_path / "runs" / f"i_prune={row['i_prune']},amplitude={row['amplitude']}" /
                               f"seed-{s}" / "summary.json").read_text())["final_eval_reward"] for s in (0, 1)]
        assert float(row["mean"]) == pytest.approx(sum(rewards) / 2)
    for field in ("i_prune", "amplitude"):
        assert (tmp_path / f"sweep_{field}.png").stat().st_size > 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["effects"]["i_prune"]["values"] == [1, 2]
    # a finished sweep only rebuilds its outputs
    assert main(argv) == 0 and "8 runs: 8 finished" in capsys.readouterr().out


def test_one_at_a_time_sweep_changes_one_field_from_the_base(tmp_path, capsys):
    argv = ["sweep", "--budget", "tiny", "--out", str(tmp_path), "--seeds", "0", "--jobs", "1", "--threads", "1",
            "--one-at-a-time", "--grid", "normalize_rewards=false", "entropy_coef=0,0.05", "--set", "gamma=0.9"]
    assert main(argv) == 0
    capsys.readouterr()
    configs = {path.parent.name: json.loads((path / "config.json").read_text())
               for path in (tmp_path / "runs").glob("*/seed-0")}
    assert sorted(configs) == ["base", "entropy_coef=0.0", "entropy_coef=0.05", "normalize_rewards=False"]
    base = configs.pop("base")
    assert base["gamma"] == 0.9 and base["normalize_rewards"] is True
    for name, config in configs.items():
        field, _, _ = name.partition("=")
        assert {k for k in config if config[k] != base[k]} == {field}, name
        assert config["gamma"] == 0.9
    with open(tmp_path / "sweep.csv") as f:
        rows = {r["change"]: r for r in csv.DictReader(f)}
    for name in ("base", "entropy_coef=0.05"):
        reward = json.loads((tmp_path / "runs" / name / "seed-0" / "summary.json").read_text())["final_eval_reward"]
        assert float(rows[name]["mean"]) == pytest.approx(reward)
    effect = json.loads((tmp_path / "report.json").read_text())["effects"]["entropy_coef"]
    assert effect["values"] == ["base", 0.0, 0.05] and effect["mean"][0] == pytest.approx(float(rows["base"]["mean"]))


def test_sweep_rejects_a_bad_grid_before_any_run(tmp_path, capsys):
    for grid_items, message in ((["i_start=0,9"], "--grid point i_start=9"), (["bogus=1"], "--grid bogus: unknown field")):
        code, err = exit_code(["sweep", "--budget", "tiny", "--out", str(tmp_path), "--grid", *grid_items], capsys)
        assert code == 2 and message in err
    assert not any(tmp_path.iterdir())


TINY_SCRIPT = """
import sys
from hapruned.experiments import grid
grid.BUDGETS["tiny"] = grid.Budget("fast", {budget}, seeds=(0, 1))
from hapruned.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_ctrl_c_stops_the_workers_and_exits_130(tmp_path):
    """A real SIGINT to the whole process group (as a terminal sends it) while worker processes train."""
    slow = {**TINY_BUDGET, "iterations": 300}
    argv = [sys.executable, "-c", TINY_SCRIPT.format(budget=slow), "reproduce", "--budget", "tiny", "--out", str(tmp_path),
            "--setups", "A", "--methods", "aloha,linear,dense", "--jobs", "2", "--threads", "1"]
    training = tmp_path / "runs" / "A" / "linear" / "seed-0"
    with processes.started(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        deadline = time.monotonic() + 120
        while not (training / "config.json").exists():  # a worker is training it
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.1)
        time.sleep(0.5)
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 130, err
        assert "run the same command again to resume" in err and "Traceback" not in err and "leaked" not in err
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # every worker of the process group is gone
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            pytest.fail("worker processes survived the interrupt")
    assert grid.run_status(training) == "started"


def test_ray_executor_gives_the_local_results(tmp_path, capsys, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    flags = ["--methods", "aloha,linear", "--seeds", "0,1"]
    assert reproduce(tmp_path / "local", *flags) == 0
    try:
        # a local Ray instance of jobs x threads = 2 CPUs, no dashboard, shut down at the end
        assert main(["reproduce", "--budget", "tiny", "--out", str(tmp_path / "ray"), "--setups", "A",
                     "--executor", "ray", "--jobs", "2", *flags]) == 0
        assert not ray.is_initialized()
    finally:
        ray.shutdown()
    assert "Ray tasks of 1 CPU(s) on a local Ray instance" in capsys.readouterr().out
    assert (tmp_path / "ray" / "table1.csv").read_text() == (tmp_path / "local" / "table1.csv").read_text()
    assert summaries(tmp_path / "ray") == summaries(tmp_path / "local")


def test_bounds_compares_runs_with_the_bound_and_the_oracle_of_their_episodes(tmp_path, capsys):
    from hapruned.algos.config import TrainConfig
    from hapruned.baselines import Oracle, decentralised_bound, evaluate

    config = TrainConfig.preset("fast", **TINY_BUDGET)
    observing = config.replace(observe_snr=True, snr_low=1.0, snr_high=100.0)
    runs = {"a0": config, "a1": config.replace(seed=1), "snr": observing}
    for name, run_config in runs.items():
        trainer.train(run_config, tmp_path / name, progress=False)
    assert main(["bounds", *(str(tmp_path / name) for name in runs), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(row["seeds"], row["observe_snr"]) for row in rows] == [(2, False), (1, True)]
    rewards = [json.loads((tmp_path / name / "summary.json").read_text())["final_eval_reward"] for name in ("a0", "a1")]
    oracle = [evaluate(Oracle(), config.env_config, 3, seed=trainer.eval_seed(s), num_envs=3).mean() for s in (0, 1)]
    bound = decentralised_bound(config.env_config)
    assert rows[0]["mean"] == pytest.approx(sum(rewards) / 2) and rows[0]["oracle"] == pytest.approx(sum(oracle) / 2)
    assert rows[0]["decentralised_bound"] == bound
    mean, oracle_mean = sum(rewards) / 2, sum(oracle) / 2  # computed here, not read back from the rows
    assert rows[0]["gap_closed"] == pytest.approx((mean - bound) / (oracle_mean - bound))
    assert rows[1]["decentralised_bound"] == decentralised_bound(runs["snr"].env_config) != bound
    assert rows[1]["std"] is None and rows[0]["runs"] == [str(tmp_path / "a0"), str(tmp_path / "a1")]

    assert main(["bounds", str(tmp_path / "a0"), str(tmp_path / "snr")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 4 and table[2].startswith("| A | 2 | 2 | no | harmonic | 4 | 1 |")
    assert table[3].startswith("| A | 2 | 2 | yes |")


@pytest.mark.parametrize("remove, message", [("summary.json", "not a finished run"), ("config.json", "config.json")])
def test_bounds_refuses_what_is_not_a_finished_run(tmp_path, capsys, remove, message):
    from hapruned.algos.config import TrainConfig

    trainer.train(TrainConfig.preset("fast", **{**TINY_BUDGET, "iterations": 2}), tmp_path / "run", progress=False)
    (tmp_path / "run" / remove).unlink()
    with pytest.raises(SystemExit) as exit_info:
        main(["bounds", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "RUN_DIR" in error and message in error
