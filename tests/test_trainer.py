"""The training run: run directory contents, atomic checkpoints, exact resume, NaN stop."""

import json
import os

import pytest
import torch


from hapruned.algos import trainer
from hapruned.algos.config import TrainConfig
from hapruned.algos.trainer import RunDirError, TrainingDiverged, eval_seed, load_metrics, train

TIMING_KEYS = {"iteration_time_s", "wall_time_s", "agent_steps_per_s"}


def tiny_config(**overrides) -> TrainConfig:
    """Small enough that a run takes a second or two on CPU, and still prunes and evaluates."""
    values = dict(
        n_users=2, n_channels=2, horizon=8, hidden_size=16, num_layers=2, iterations=6,
        envs_per_iteration=2, minibatches=2, epochs=2, i_prune=2, method="harmonic", sparsity=0.5,
        eval_every=4, eval_episodes=3, seed=3,
    )
    return TrainConfig(**{**values, **overrides})


def algo_config(algo: str, **overrides) -> TrainConfig:
    """A tiny run of any algorithm, with that algorithm's own defaults."""
    values = dict(n_users=2, n_channels=2, horizon=8, hidden_size=16, iterations=6, envs_per_iteration=2,
                  eval_every=4, eval_episodes=3, seed=3)
    values.update({
        "ppo": dict(minibatches=2, epochs=2, i_prune=2, method="harmonic", sparsity=0.5),
        "ac": dict(i_prune=2, method="linear", sparsity=0.5),
        "pai": dict(minibatches=2, epochs=2, sparsity=0.5),
        "dqn": dict(replay_capacity=5, replay_batch=2, updates_per_iteration=2, target_update=3),
    }[algo])
    return TrainConfig.preset("paper", algo=algo, **{**values, **overrides})


def without_timings(records):
    return [{k: v for k, v in record.items() if k not in TIMING_KEYS} for record in records]


def load_checkpoint(run_dir):
    return trainer.read_checkpoint(run_dir / trainer.CHECKPOINT_FILE)


def assert_same_state(a, b, where="state"):
    """Recursive exact equality of two state dicts (tensors compared bit for bit)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs: max |diff| {(a.double() - b.double()).abs().max()}"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where} keys differ: {set(a) ^ set(b)}"
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    elif hasattr(a, "shape"):  # numpy arrays
        assert (a == b).all(), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def float_tensors(state):
    if isinstance(state, torch.Tensor):
        if state.is_floating_point():
            yield state
    elif isinstance(state, dict):
        for value in state.values():
            yield from float_tensors(value)
    elif isinstance(state, (list, tuple)):
        for value in state:
            yield from float_tensors(value)


def interrupt_at(monkeypatch, iteration, error, algo="ppo"):
    """Make the learner's train_iteration raise ``error`` when it reaches ``iteration``."""
    learner = trainer.LEARNERS[algo]
    original = learner.train_iteration

    def train_iteration(self, i):
        if i == iteration:
            raise error
        return original(self, i)

    monkeypatch.setattr(learner, "train_iteration", train_iteration)


def test_run_directory_contents(tmp_path):
    config = tiny_config()
    summary = train(config, tmp_path, progress=False)

    assert json.loads((tmp_path / "config.json").read_text()) == trainer.config_dict(config)
    records = load_metrics(tmp_path)
    assert [r["iteration"] for r in records] == list(range(1, config.iterations + 1))
    evaluated = [r["iteration"] for r in records if "eval_reward" in r]
    assert evaluated == [4, 6]  # every eval_every iterations and at the end
    for record in records:
        for key in ("episode_reward", "approx_kl", "clip_fraction", "entropy", "explained_variance", "agent_steps_per_s"):
            assert key in record, key
        assert len(record["sparsity"]) == config.n_users
        assert record["agent_steps_per_s"] > 0
    assert records[-1]["eval_reward_per_seed"] == summary["final_eval_reward_per_seed"]

    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert summary["final_eval_reward"] == pytest.approx(records[-1]["eval_reward"])
    assert len(summary["final_eval_reward_per_seed"]) == 1 and summary["seeds"] == [3]
    # the summary's sparsity is that of the actor weights actually saved: exactly p_final per agent
    saved = load_checkpoint(tmp_path)
    assert saved["iteration"] == config.iterations
    actor = saved["algo"]["actor"]
    names = [f"lstm.weight_{kind}_l{k}" for k in range(config.num_layers) for kind in ("ih", "hh")] + ["head.weight"]
    zeros = sum((actor[name].flatten(1) == 0).sum(1) for name in names)
    total = sum(actor[name][0].numel() for name in names)
    assert zeros.tolist() == [round(0.5 * total)] * config.n_users
    assert summary["sparsity_per_agent"] == pytest.approx((zeros / total).tolist())


def test_several_seeds_report_one_reward_each(tmp_path):
    summary = train(tiny_config(seeds=(0, 1), iterations=2, eval_every=2), tmp_path, progress=False)
    assert summary["seeds"] == [0, 1]
    assert len(summary["final_eval_reward_per_seed"]) == 2
    assert summary["final_eval_reward"] == pytest.approx(sum(summary["final_eval_reward_per_seed"]) / 2)


def test_evaluation_replays_fixed_held_out_episodes(tmp_path, monkeypatch):
    seeds_used = []
    original = trainer.IAGCPPO.evaluate

    def evaluate(self, episodes, seed):
        seeds_used.append(seed)
        return original(self, episodes, seed)

    monkeypatch.setattr(trainer.IAGCPPO, "evaluate", evaluate)
    config = tiny_config(eval_every=2)
    train(config, tmp_path, progress=False)
    assert seeds_used == [eval_seed(config.seed)] * 3
    assert eval_seed(config.seed) != config.seed


@pytest.mark.parametrize("algo", ["ppo", "ac", "pai", "dqn"])
def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch, algo):
    config = algo_config(algo)
    train(config, tmp_path / "whole", progress=False, checkpoint_every=3)

    # stop during iteration 6: lines 1..5 are written, the checkpoint is at iteration 3
    with monkeypatch.context() as patch:
        interrupt_at(patch, 6, KeyboardInterrupt(), algo)
        with pytest.raises(KeyboardInterrupt):
            train(config, tmp_path / "split", progress=False, checkpoint_every=3)
    assert len(load_metrics(tmp_path / "split")) == 5
    assert load_checkpoint(tmp_path / "split")["iteration"] == 3

    torch.manual_seed(12345)  # the resumed run must not depend on the process's RNG state
    train(config, tmp_path / "split", resume=True, progress=False, checkpoint_every=3)

    assert without_timings(load_metrics(tmp_path / "split")) == without_timings(load_metrics(tmp_path / "whole"))
    whole, split = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "split")
    assert_same_state(whole["algo"], split["algo"], "algo")
    summary = lambda d: {k: v for k, v in json.loads((d / "summary.json").read_text()).items()
                         if k not in {"wall_time_s", "out_dir"}}
    assert summary(tmp_path / "split") == summary(tmp_path / "whole")


def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    config = tiny_config(iterations=2, eval_every=2)
    first = train(config, tmp_path, progress=False)
    again = train(config, tmp_path, resume=True, progress=False)
    assert again == first
    assert len(load_metrics(tmp_path)) == 2


def test_a_run_written_before_the_later_fields_existed_still_resumes(tmp_path):
    config = tiny_config(iterations=2, eval_every=2)
    first = train(config, tmp_path, progress=False)
    # as an earlier hapruned, whose configs had none of the later fields (and whose checkpoints had no
    # digest), wrote them
    values = json.loads((tmp_path / "config.json").read_text())
    checkpoint = load_checkpoint(tmp_path)
    del checkpoint["digest"]
    for name in trainer.LATER_FIELDS:
        del values[name], checkpoint["config"][name]
    (tmp_path / "config.json").write_text(json.dumps(values))
    torch.save(checkpoint, tmp_path / trainer.CHECKPOINT_FILE)
    assert train(config, tmp_path, resume=True, progress=False) == first
    with pytest.raises(RunDirError, match="differing fields: observe_snr"):  # a run that observes the SNR
        train(config.replace(observe_snr=True), tmp_path, resume=True, progress=False)


def test_refuses_non_empty_directory_without_resume(tmp_path):
    (tmp_path / "notes.txt").write_text("something else")
    with pytest.raises(RunDirError, match="not empty.*resume"):
        train(tiny_config(), tmp_path, progress=False)
    with pytest.raises(RunDirError, match="not a run directory"):
        train(tiny_config(), tmp_path, resume=True, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_refuses_resume_with_a_different_config(tmp_path):
    train(tiny_config(iterations=2, eval_every=2), tmp_path, progress=False)
    changed = tiny_config(iterations=2, eval_every=2, actor_lr=1e-3, sparsity=0.8)
    with pytest.raises(RunDirError, match="differing fields: actor_lr, sparsity"):
        train(changed, tmp_path, resume=True, progress=False)


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = tiny_config(iterations=8)
    original = trainer.IAGCPPO.train_iteration

    def poisoned(self, iteration):
        if iteration == 6:  # a NaN critic makes the values, advantages and losses NaN
            with torch.no_grad():
                for param in self.critic.parameters():
                    param.fill_(float("nan"))
        return original(self, iteration)

    monkeypatch.setattr(trainer.IAGCPPO, "train_iteration", poisoned)
    with pytest.raises(TrainingDiverged, match=r"iteration 6\b.*checkpoint \(iteration 4\)"):
        train(config, tmp_path, progress=False, checkpoint_every=2)
    saved = load_checkpoint(tmp_path)
    assert saved["iteration"] == 4
    assert all(torch.isfinite(t).all() for t in float_tensors(saved["algo"]))
    assert not (tmp_path / "summary.json").exists()
    assert [r["iteration"] for r in load_metrics(tmp_path)] == [1, 2, 3, 4, 5]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    config = tiny_config(iterations=4, eval_every=4)
    real_save = torch.save
    calls = []

    def failing_save(obj, f):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint dies half-way through writing
            f.write(b"partial checkpoint bytes")
            raise OSError("disk full")
        real_save(obj, f)

    monkeypatch.setattr(trainer.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        train(config, tmp_path, progress=False, checkpoint_every=2)
    monkeypatch.setattr(trainer.torch, "save", real_save)

    assert load_checkpoint(tmp_path)["iteration"] == 2
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "config.json", "metrics.jsonl"]
    # and the run resumes from the intact checkpoint
    summary = train(config, tmp_path, resume=True, progress=False, checkpoint_every=2)
    assert load_checkpoint(tmp_path)["iteration"] == 4 and summary["iterations"] == 4


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="checkpoint_every"):
        train(tiny_config(), tmp_path, progress=False, checkpoint_every=0)
    with pytest.raises(TypeError, match="TrainConfig"):
        train({"iterations": 2}, tmp_path, progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
def test_cuda_device_without_gpu_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no CUDA GPU"):
        train(tiny_config(device="cuda"), tmp_path, progress=False)
    assert not tmp_path.joinpath("config.json").exists()
