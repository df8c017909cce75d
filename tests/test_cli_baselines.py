import json

import numpy as np
import pytest

from hapruned.baselines import (SCHEMES, OpportunisticChannelAware, SlottedAloha, StickyAccess, decentralised_bound,
                                evaluate)
from hapruned.cli import main
from hapruned.env import DSAConfig

SMALL = ["--episodes", "12", "--n-users", "4", "--n-channels", "3", "--horizon", "15", "--num-envs", "5"]


def run_json(capsys, *flags):
    assert main(["baselines", "--json", *SMALL, *flags]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_has_every_scheme_and_matches_evaluate(capsys):
    report = run_json(capsys, "--setup", "B", "--seed", "3")
    assert list(report["schemes"]) == list(SCHEMES)
    config = DSAConfig.setup("B", n_users=4, n_channels=3, horizon=15)
    assert report["config"]["pu_prob"] == 0.2 and report["config"]["n_users"] == 4
    for name, cls in SCHEMES.items():
        row = report["schemes"][name]
        assert row["min"] <= row["mean"] <= row["max"] and row["std"] >= 0
        rewards = evaluate(cls(), config, episodes=12, seed=3, num_envs=5)
        assert row["mean"] == pytest.approx(rewards.mean())
        assert row["max"] == pytest.approx(rewards.max())


def test_schemes_subset_and_aloha_p(capsys):
    report = run_json(capsys, "--schemes", "sticky,aloha", "--aloha-p", "0.2")
    assert sorted(report["schemes"]) == ["aloha", "sticky"]
    config = DSAConfig(n_users=4, n_channels=3, horizon=15)
    expected = evaluate(SlottedAloha(p=0.2), config, episodes=12, seed=0, num_envs=5).mean()
    assert report["schemes"]["aloha"]["mean"] == pytest.approx(expected)
    assert report["schemes"]["sticky"]["mean"] == pytest.approx(
        evaluate(StickyAccess(), config, episodes=12, seed=0, num_envs=5).mean()
    )


def test_config_flags_override_the_setup(capsys):
    report = run_json(capsys, "--setup", "B", "--pu-prob", "0,0.5,1", "--snr-low", "3", "--snr-high", "7")
    assert report["config"]["pu_prob"] == [0.0, 0.5, 1.0]
    assert (report["config"]["snr_low"], report["config"]["snr_high"]) == (3.0, 7.0)
    # channel 3 is always busy: the oracle uses at most two channels per slot
    assert report["schemes"]["oracle"]["max"] <= 15 * 2 * np.log2(8.0) + 1e-9


def test_table_lists_every_scheme(capsys):
    assert main(["baselines", *SMALL]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[2:-1]] == list(SCHEMES)
    assert all(len(line.split()) == 6 for line in lines[2:-1])
    bound = decentralised_bound(DSAConfig(n_users=4, n_channels=3, horizon=15))
    assert lines[-1] == f"decentralised bound (SNRs never observed): {bound:.1f}"


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--setup", "C"], "invalid choice: 'C'"),
        (["--n-users", "0"], "--n-users must be an integer >= 1"),
        (["--pu-prob", "1.5"], "--pu-prob values must lie in [0, 1]"),
        (["--pu-prob", "abc"], "pu_prob must be a probability or comma-separated probabilities"),
        (["--snr-high", "1", "--snr-low", "2"], "--snr-high must be"),
        (["--episodes", "0"], "--episodes must be an integer >= 1"),
        (["--seed", "-1"], "--seed must be an integer in [0, "),
        (["--schemes", "aloha,foo"], "choose a comma-separated subset of aloha,oca,sticky,oracle"),
        (["--aloha-p", "0"], "--aloha-p must be a finite number in (0, 1]"),
        (["--episodes", "many"], "invalid int value"),
    ],
)
def test_bad_flags_give_clear_errors(capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["baselines", *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_oracle_scales_to_the_largest_study(capsys):
    report = run_json(capsys, "--n-users", "40", "--n-channels", "20", "--schemes", "oracle,sticky", "--episodes", "4")
    assert report["config"]["n_channels"] == 20
    # 20 users alone on the 20 channels every slot, each on a channel of its own choosing
    oracle, bound = report["schemes"]["oracle"]["min"], report["decentralised_bound"]
    assert bound < oracle <= 15 * 20 * np.log2(41.0)
    assert report["decentralised_bound"] == pytest.approx(20 * 15 * np.mean(np.log2(1 + np.linspace(30, 40, 100_001))))


def test_observe_snr_flag_reaches_the_schemes(capsys):
    observed = run_json(capsys, "--observe-snr", "--schemes", "oca", "--snr-low", "1", "--snr-high", "100")
    plain = run_json(capsys, "--schemes", "oca", "--snr-low", "1", "--snr-high", "100")
    assert observed["config"]["observe_snr"] is True and plain["config"]["observe_snr"] is False
    config = DSAConfig(n_users=4, n_channels=3, horizon=15, snr_low=1, snr_high=100, observe_snr=True)
    expected = evaluate(OpportunisticChannelAware(), config, episodes=12, seed=0, num_envs=5).mean()
    assert observed["schemes"]["oca"]["mean"] == pytest.approx(expected) != plain["schemes"]["oca"]["mean"]
