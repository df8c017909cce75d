"""``hapruned train``: flag parsing, errors and the --json output."""

import argparse
import json

import pytest
import torch

import hapruned
from hapruned.algos import command
from hapruned.algos.config import METHODS, PRESETS, TrainConfig

TINY = [
    "--n-users", "2", "--n-channels", "2", "--horizon", "8", "--hidden-size", "16", "--iterations", "2",
    "--envs-per-iteration", "2", "--minibatches", "1", "--epochs", "1", "--i-prune", "1",
    "--eval-every", "2", "--eval-episodes", "2",
]


def build_parser():
    parser = argparse.ArgumentParser(prog="hapruned")
    command.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def run(argv) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


@pytest.fixture(autouse=True)
def keep_thread_count():
    """`hapruned train` sets the process's thread count; the other tests keep the suite's."""
    before = torch.get_num_threads()
    yield
    hapruned.set_num_threads(before)


@pytest.mark.parametrize("flags, cores, expected", [([], 64, 4), ([], 3, 3), (["--threads", "5"], 2, 5)])
def test_threads_default_to_the_cores_at_most_one_per_agent_and_seed(tmp_path, monkeypatch, flags, cores, expected):
    """2 agents x 2 seeds: 4 groups, so at most 4 threads unless --threads says otherwise."""
    chosen = []
    monkeypatch.setattr(hapruned, "available_cores", lambda: cores)
    monkeypatch.setattr(hapruned, "set_num_threads", chosen.append)
    assert run(["train", "--out", str(tmp_path / "run"), "--json", *TINY, "--seeds", "0-1", *flags]) == 0
    assert chosen == [expected]


def test_bad_thread_count_names_the_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(["train", "--out", str(tmp_path / "run"), "--threads", "0", *TINY])
    assert exit_info.value.code == 2 and "--threads must be >= 1, got 0" in capsys.readouterr().err


def test_flags_override_the_preset():
    args = build_parser().parse_args(
        ["train", "--out", "x", "--preset", "fast", "--setup", "B", "--method", "cosine", "--sparsity", "0.9",
         "--seeds", "0-9", "--no-normalize-rewards", "--actor-lr", "0.001"]
    )
    config = command.config_from_args(args)
    fast = TrainConfig.preset("fast")
    assert config.seeds == tuple(range(10))
    assert (config.setup, config.method, config.sparsity, config.actor_lr) == ("B", "cosine", 0.9, 0.001)
    assert config.normalize_rewards is False
    assert config.iterations == fast.iterations and config.envs_per_iteration == fast.envs_per_iteration


def test_help_gives_the_fast_presets_values():
    train = command.add_parser(argparse.ArgumentParser().add_subparsers())
    helps = {action.dest: action.help for action in train._actions}
    for name, value in PRESETS["fast"].items():
        assert f"--preset fast: {value}" in helps[name], name
    assert "--preset" not in helps["horizon"]  # no preset changes it


def test_seed_ranges_and_lists_mix():
    args = build_parser().parse_args(["train", "--out", "x", "--seeds", "0-2,7,9-10"])
    assert command.config_from_args(args).seed_list == (0, 1, 2, 7, 9, 10)


def test_default_preset_is_the_papers():
    args = build_parser().parse_args(["train", "--out", "x"])
    assert command.config_from_args(args) == TrainConfig.preset("paper")


def test_bad_method_lists_the_allowed_values(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(["train", "--out", "x", "--method", "quadratic"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "method" in err and "quadratic" in err
    for method in METHODS:
        assert method in err


def test_bad_preset_lists_the_allowed_values(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--out", "x", "--preset", "huge"])
    err = capsys.readouterr().err
    assert "fast" in err and "paper" in err


def test_json_output_parses_and_matches_the_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["train", "--out", str(out), "--json", *TINY, "--seeds", "0-1"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and len(summary["final_eval_reward_per_seed"]) == 2
    assert "reward=" not in captured.err  # --json turns the progress bar off


def test_progress_bar_on_stderr_without_json(tmp_path, capsys):
    assert run(["train", "--out", str(tmp_path / "run"), *TINY]) == 0
    captured = capsys.readouterr()
    assert "reward=" in captured.err and "sparsity=" in captured.err
    assert "final eval reward" in captured.out


def test_non_empty_out_without_resume_is_an_error(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["train", "--out", str(out), "--json", *TINY]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run(["train", "--out", str(out), "--json", *TINY])
    assert exit_info.value.code == 2
    assert "--resume" in capsys.readouterr().err
    # --resume takes the run's own config: no other flag is needed
    assert run(["train", "--out", str(out), "--json", "--resume"]) == 0


def test_resume_with_other_flags_names_the_fields(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["train", "--out", str(out), "--json", *TINY]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run(["train", "--out", str(out), "--json", "--resume", "--gamma", "0.9", "--horizon", "8"])
    assert "differing fields: gamma" in capsys.readouterr().err  # horizon is the run's own value


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
def test_cuda_without_gpu_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(["train", "--out", str(tmp_path / "run"), "--device", "cuda", *TINY])
    assert exit_info.value.code == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_diverged_run_exits_with_a_message(tmp_path, capsys, monkeypatch):
    from hapruned.algos import trainer

    def diverge(self, iteration):
        raise FloatingPointError("non-finite loss (actor nan, critic nan)")

    monkeypatch.setattr(trainer.IAGCPPO, "train_iteration", diverge)
    assert run(["train", "--out", str(tmp_path / "run"), "--json", *TINY]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "diverged at iteration 1" in captured.err and "non-finite loss" in captured.err
