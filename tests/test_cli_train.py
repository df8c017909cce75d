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
# the fields of TINY that every algorithm reads
TINY_ANY_ALGO = ["--n-users", "2", "--n-channels", "2", "--horizon", "8", "--hidden-size", "16", "--iterations", "2",
                 "--envs-per-iteration", "2", "--eval-every", "2", "--eval-episodes", "2"]


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


@pytest.mark.parametrize("flags, cores, expected", [([], 64, 4), ([], 3, 3), (["--threads", "5"], 8, 5)])
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
    assert exit_info.value.code == 2 and "--threads must be an integer in [1, " in capsys.readouterr().err


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


@pytest.mark.parametrize(
    "flags,named",
    [
        (["--algo", "dqn", "--prune-mode", "masked"], ["--prune-mode", "regrow", "dqn"]),
        (["--algo", "pai", "--method", "harmonic"], ["--method", "constant", "pai"]),
        (["--algo", "ac", "--epochs", "4"], ["--epochs", "ac"]),
        (["--algo", "ppo", "--replay-capacity", "50"], ["--replay-capacity", "ppo"]),
    ],
)
def test_bad_algorithm_combinations_fail_before_writing(tmp_path, capsys, flags, named):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        run(["train", "--out", str(out), *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    for word in named:
        assert word in err, word
    assert "TrainConfig" not in err  # flags, not dataclass fields
    assert not out.exists()


@pytest.mark.parametrize("algo,extra", [("ac", []), ("pai", ["--epochs", "1"]),
                                        ("dqn", ["--replay-batch", "2", "--updates-per-iteration", "1"])])
def test_each_algorithm_trains_through_the_command(tmp_path, capsys, algo, extra):
    out = tmp_path / "run"
    assert run(["train", "--out", str(out), "--json", "--algo", algo, *TINY_ANY_ALGO, *extra]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert json.loads((out / "config.json").read_text())["algo"] == algo
    assert summary["iterations"] == 2 and len(summary["final_eval_reward_per_seed"]) == 1


def test_every_environment_field_is_a_train_flag(tmp_path, capsys):
    from hapruned.env import DSAConfig

    flags = {action.option_strings[0] for action in build_parser()._subparsers._group_actions[0].choices["train"]._actions
             if action.option_strings}
    for field in DSAConfig.__dataclass_fields__:
        assert "--" + field.replace("_", "-") in flags, field
    out = tmp_path / "run"
    assert run(["train", "--out", str(out), "--json", *TINY, "--pu-prob", "0.1,0.3", "--snr-low", "10",
                "--snr-high", "12"]) == 0
    config = command.config_from_args(build_parser().parse_args(["train", "--out", str(out), "--resume"]))
    assert config.env_config == DSAConfig(n_users=2, n_channels=2, horizon=8, snr_low=10, snr_high=12, pu_prob=(0.1, 0.3))
    # a lower SNR range than the default lowers the rate of every success, so the rewards follow the flags
    summary = json.loads(capsys.readouterr().out)
    assert summary["final_eval_reward"] <= 2 * 8 * 3.71  # log2(1 + 12) per success at most


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_observe_snr_flag_trains_on_the_wider_input(tmp_path, capsys, algo):
    out = tmp_path / "run"
    extra = ["--replay-batch", "2", "--updates-per-iteration", "1"] if algo == "dqn" else ["--epochs", "1"]
    assert run(["train", "--out", str(out), "--json", "--algo", algo, *TINY_ANY_ALGO, *extra, "--observe-snr",
                "--snr-low", "1", "--snr-high", "100"]) == 0
    assert json.loads((out / "config.json").read_text())["observe_snr"] is True
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)["algo"]
    first_layer = checkpoint["q" if algo == "dqn" else "actor"]["lstm.weight_ih_l0"]
    assert first_layer.shape[-1] == 2 + 6  # K + 6 inputs: the SNR feature follows the one-hots
    if algo == "dqn":  # the replay keeps the feature exactly, between 0 and 1
        inputs = checkpoint["replay"]["inputs"]
        assert inputs.dtype == torch.float32 and ((inputs[..., -1] > 0) & (inputs[..., -1] < 1)).any()
    config = command.config_from_args(build_parser().parse_args(["train", "--out", str(out), "--resume"]))
    assert config.observe_snr and config.env_config.observe_snr
