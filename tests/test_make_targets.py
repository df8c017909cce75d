"""What the Makefile's jobs run: ``make run`` (``hapruned demo``) and ``make smoke`` (the smoke grid of
``hapruned reproduce``), here at small budgets; and the Makefile's environment handling."""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from hapruned.algos.config import TrainConfig
from hapruned.algos.trainer import load_config
from hapruned.baselines import SCHEMES, decentralised_bound, evaluate
from hapruned.deploy import load_actors
from hapruned.experiments import demo_command
from hapruned.experiments.grid import METHODS
import processes
from in_process import cli

ROOT = Path(__file__).resolve().parents[1]

TINY = dict(n_users=3, n_channels=2, horizon=8, hidden_size=16, iterations=4, envs_per_iteration=2, minibatches=1,
            epochs=1, i_prune=1, i_end=3, eval_every=2, eval_episodes=5)


@pytest.fixture
def tiny_recipe(monkeypatch):
    """The demo's recipe at a few iterations of a small environment."""
    monkeypatch.setattr(demo_command, "recipe",
                        lambda setup, seed: TrainConfig.preset("paper-budget", setup=setup, seed=seed, **TINY))


def test_the_demo_is_the_paper_budget_recipe_at_95_percent():
    config = demo_command.recipe("A", 0)
    assert config == TrainConfig.preset("paper-budget", setup="A", seed=0)
    assert (config.algo, config.method, config.sparsity, config.setup) == ("ppo", "harmonic", 0.95, "A")


def test_demo_sets_the_run_beside_the_schemes_and_the_bound(tmp_path, capsys, tiny_recipe):
    out = tmp_path / "demo"
    code, stdout, err = cli(["demo", "--out", str(out), "--setup", "B", "--seed", "3", "--threads", "1", "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert json.loads((out / "demo.json").read_text()) == result

    # every number again, from the run directory and the library, not from the command
    summary = json.loads((out / "run" / "summary.json").read_text())
    config = load_config(out / "run")
    assert (config.setup, config.seed) == ("B", 3)
    env = config.env_config
    bound = decentralised_bound(env)
    assert result["decentralised_bound"] == pytest.approx(bound, rel=1e-12)
    assert result["rewards"]["trained"] == pytest.approx(summary["final_eval_reward"], rel=1e-12)
    assert result["share_of_bound"]["trained"] == pytest.approx(summary["final_eval_reward"] / bound, rel=1e-12)
    episodes, seed = summary["eval_episodes"], summary["eval_seed"]
    for name in ("aloha", "oca", "sticky", "oracle"):
        expected = evaluate(SCHEMES[name](), env, episodes, seed=seed, num_envs=episodes).mean()
        assert result["rewards"][name] == pytest.approx(expected, rel=1e-12), name
        assert result["share_of_bound"][name] == pytest.approx(expected / bound, rel=1e-12), name
    assert result["sparsity_per_agent"] == summary["sparsity_per_agent"]
    assert result["sparsity"] == pytest.approx(np.mean(summary["sparsity_per_agent"]))
    assert result["sparsity"] == pytest.approx(0.95, abs=0.01)

    hpz = out / "actors.hpz"
    assert result["hpz_bytes"] == os.path.getsize(hpz) > 0
    actors = load_actors(hpz)
    assert [a.agent for a in actors] == list(range(config.n_users))
    assert sorted(p.name for p in out.iterdir()) == ["actors.hpz", "demo.json", "run"]


def test_demo_refuses_a_used_out_unless_told_and_resumes_without_training_again(tmp_path, capsys, tiny_recipe):
    out = tmp_path / "demo"
    assert cli(["demo", "--out", str(out), "--threads", "1", "--json"], capsys)[0] == 0
    checkpoint = out / "run" / "checkpoint.pt"
    trained = checkpoint.stat().st_mtime_ns

    code, _, err = cli(["demo", "--out", str(out), "--threads", "1"], capsys)
    assert code == 2 and "--out" in err and "--resume" in err and "--force" in err and "Traceback" not in err
    assert checkpoint.stat().st_mtime_ns == trained

    # a finished demo resumed: the same numbers, printed as the table, no training
    code, table, err = cli(["demo", "--out", str(out), "--threads", "1", "--resume"], capsys)
    assert code == 0, err
    assert checkpoint.stat().st_mtime_ns == trained
    result = json.loads((out / "demo.json").read_text())
    share = result["rewards"]["trained"] / result["decentralised_bound"]
    trained_row = next(line for line in table.splitlines() if "(this run)" in line)
    assert trained_row.split()[-2:] == [f"{result['rewards']['trained']:.1f}", f"{share:.2%}"]
    assert f"{os.path.getsize(out / 'actors.hpz'):,} bytes" in table

    (out / "notes.txt").write_text("mine")
    for flag in ("--force", "--resume"):
        code, _, err = cli(["demo", "--out", str(out), "--threads", "1", flag], capsys)
        assert code == 2 and "notes.txt" in err, err
    assert (out / "notes.txt").read_text() == "mine" and checkpoint.stat().st_mtime_ns == trained

    (out / "notes.txt").unlink()
    code, _, err = cli(["demo", "--out", str(out), "--threads", "1", "--force", "--json"], capsys)
    assert code == 0, err
    assert checkpoint.stat().st_mtime_ns != trained
    assert cli(["demo", "--out", str(out), "--resume", "--force"], capsys)[0] == 2


def test_an_interrupted_demo_says_how_to_continue(tmp_path, capsys, tiny_recipe, monkeypatch):
    from hapruned.algos import trainer

    def interrupted(self, iteration):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer.IAGCPPO, "train_iteration", interrupted)
    code, _, err = cli(["demo", "--out", str(tmp_path / "demo"), "--threads", "1"], capsys)
    assert code == 130 and f"hapruned demo --out {tmp_path / 'demo'} --resume" in err and "Traceback" not in err


def test_the_smoke_grid_runs_every_method(tmp_path, capsys):
    """``make smoke``'s grid (here one setup and one seed): every Table I method trains or plays and reports."""
    code, out, err = cli(["reproduce", "--budget", "smoke", "--out", str(tmp_path), "--setups", "A", "--seeds", "0",
                          "--jobs", "1", "--threads", "1"], capsys)
    assert code == 0, err
    with open(tmp_path / "table1.csv") as f:
        rows = {row["method"]: row for row in csv.DictReader(f)}
    assert set(rows) == set(METHODS)
    assert all(float(row["mean"]) > 0 for row in rows.values())


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("environment,python", [
    ({"VIRTUAL_ENV": "", "CONDA_PREFIX": ""}, ".venv/bin/python"),
    ({"VIRTUAL_ENV": "/opt/some-venv", "CONDA_PREFIX": ""}, "python3"),
    ({"VIRTUAL_ENV": "", "CONDA_PREFIX": "/opt/conda"}, "python3"),
])
def test_make_uses_the_active_environment_or_its_own_venv(environment, python):
    env = {**os.environ, **environment}
    env.pop("PYTHON", None)
    dry = processes.run(["make", "-n", "run", "smoke", "test"], timeout=60, cwd=ROOT, env=env)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert f"{python} -m hapruned demo --out runs/demo --force" in lines
    assert f"{python} -m hapruned reproduce --budget smoke --out runs/smoke" in lines
    assert f"{python} -m pytest -q" in lines
    creates = any(line.startswith("python3 -m venv .venv ") for line in lines)
    assert creates == (python == ".venv/bin/python" and not (ROOT / ".venv" / "bin" / "python").exists())
