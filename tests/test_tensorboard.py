"""``hapruned train --tensorboard``: every number of every metrics.jsonl record becomes a scalar of the event
file (read back with TensorBoard's own reader), a resumed run leaves one value per step, and without the
optional package the command stops before training with the install command."""

import importlib.util
import math

import pytest

from hapruned.algos import trainer
from hapruned.algos.tensorboard_sink import scalars
from hapruned.cli import main

TINY = ["--n-users", "2", "--n-channels", "2", "--horizon", "4", "--hidden-size", "8", "--iterations", "6",
        "--envs-per-iteration", "2", "--minibatches", "1", "--epochs", "1", "--i-prune", "1", "--eval-every", "2",
        "--eval-episodes", "2", "--checkpoint-every", "2", "--seeds", "3,5", "--actor-lr", "0.002", "--critic-lr",
        "0.001"]


def events(log_dir) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of the scalars in a TensorBoard log directory, as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every value
    reader.Reload()
    return {tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


def expected(run) -> dict[str, list[tuple[int, float]]]:
    """The same series, written out here from metrics.jsonl."""
    series = {}
    for record in trainer.load_metrics(run):
        step = record["iteration"]
        for key in ("episode_reward", "actor_loss", "critic_loss", "entropy", "approx_kl", "clip_fraction",
                    "explained_variance", "agent_steps_per_s", "wall_time_s"):
            series.setdefault(key, []).append((step, record[key]))
        for agent, value in enumerate(record["sparsity"]):
            series.setdefault(f"sparsity/agent_{agent}", []).append((step, value))
        for s, seed in enumerate((3, 5)):
            series.setdefault(f"episode_reward_per_seed/seed_{seed}", []).append((step, record["episode_reward_per_seed"][s]))
            for agent, value in enumerate(record["sparsity_per_seed"][s]):
                series.setdefault(f"sparsity_per_seed/seed_{seed}/agent_{agent}", []).append((step, value))
        if "eval_reward" in record:
            series.setdefault("eval_reward", []).append((step, record["eval_reward"]))
            for s, seed in enumerate((3, 5)):
                series.setdefault(f"eval_reward_per_seed/seed_{seed}", []).append((step, record["eval_reward_per_seed"][s]))
        series.setdefault("learning_rate/actor", []).append((step, 0.002))
        series.setdefault("learning_rate/critic", []).append((step, 0.001))
    return series


def assert_same_series(logged, wanted):
    for tag, values in wanted.items():
        assert [step for step, _ in logged[tag]] == [step for step, _ in values], tag
        for (_, got), (_, want) in zip(logged[tag], values):
            assert math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-6), (tag, got, want)  # stored as float32


def test_every_metric_of_every_iteration_is_a_scalar(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY, "--json", "--tensorboard"]) == 0
    logged = events(run / "tensorboard")
    assert_same_series(logged, expected(run))
    assert [step for step, _ in logged["eval_reward"]] == [2, 4, 6]
    # nothing else is logged: every tag is a number of the records, or a learning rate
    record = trainer.load_metrics(run)[-1]
    assert set(logged) == set(scalars(record, [3, 5])) | {"learning_rate/actor", "learning_rate/critic"}


def test_a_resumed_run_logs_each_iteration_once(tmp_path, capsys, monkeypatch):
    pytest.importorskip("tensorboard")
    run, logs = tmp_path / "run", tmp_path / "logs"
    original = trainer.IAGCPPO.train_iteration

    def interrupted(self, iteration):
        if iteration == 6:  # the checkpoint is at 4: the resumed run rewrites 5 and 6
            raise KeyboardInterrupt
        return original(self, iteration)

    with monkeypatch.context() as patch:
        patch.setattr(trainer.IAGCPPO, "train_iteration", interrupted)
        assert main(["train", "--out", str(run), *TINY, "--json", "--tensorboard", str(logs)]) == 130
    assert [step for step, _ in events(logs)["episode_reward"]] == [1, 2, 3, 4, 5]
    assert main(["train", "--out", str(run), "--resume", "--json", "--tensorboard", str(logs)]) == 0
    assert_same_series(events(logs), expected(run))


def test_without_the_package_the_command_says_what_to_install(tmp_path, capsys, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else find_spec(name, *a))
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--out", str(tmp_path / "run"), *TINY, "--tensorboard"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.strip().splitlines()[-1] == ('hapruned train: error: --tensorboard: TensorBoard logging needs the '
                                            'tensorboard package: pip install "hapruned[tensorboard]"')
    assert not (tmp_path / "run").exists()


def test_lists_become_one_scalar_per_agent_or_seed():
    record = {"iteration": 7, "episode_reward": 3, "pruned": True, "sparsity": [0.5, 0.25],
              "eval_reward_per_seed": [1.0, 2.0], "sparsity_per_seed": [[0.1, 0.2], [0.3, 0.4]], "note": "text"}
    assert scalars(record, [4, 9]) == {
        "episode_reward": 3.0, "pruned": 1.0, "sparsity/agent_0": 0.5, "sparsity/agent_1": 0.25,
        "eval_reward_per_seed/seed_4": 1.0, "eval_reward_per_seed/seed_9": 2.0,
        "sparsity_per_seed/seed_4/agent_0": 0.1, "sparsity_per_seed/seed_4/agent_1": 0.2,
        "sparsity_per_seed/seed_9/agent_0": 0.3, "sparsity_per_seed/seed_9/agent_1": 0.4}
