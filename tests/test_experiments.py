"""The experiment grid, its statistics, reports, figures and sweeps (no command line)."""

import json
import math

import numpy as np
import pytest

from hapruned.algos.config import TrainConfig
from hapruned.algos.ppo import IAGCPPO
from hapruned.algos.trainer import RunDirError, config_dict, eval_seed
from hapruned.env import BatchedDSAEnv
from hapruned.experiments import figures, grid, report, sweep
from hapruned.experiments.executors import LocalExecutor, evaluate_scheme, run_all
from hapruned.experiments.grid import BUDGETS, METHODS, Budget, Run, reproduce_runs
from hapruned.experiments.stats import summarize, t_quantile

TINY = Budget("fast", dict(n_users=2, n_channels=2, horizon=8, hidden_size=16, iterations=4, envs_per_iteration=2,
                           minibatches=1, epochs=1, i_prune=1, eval_every=2, eval_episodes=3), seeds=(0, 1))

# Table I of the paper (best seed; setup A, setup B), typed from the paper
PAPER_TABLE_I = {
    "aloha": (993.77, 764.10), "oca": (1023.45, 811.52), "ac": (996.11, 802.24), "dqn": (742.54, 555.41),
    "pai": (1111.88, 825.34), "dense": (1556.83, 1115.74), "harmonic-regrow": (1826.86, 1223.41),
    "harmonic-masked": (1826.86, 1223.41), "linear": (1194.82, 1083.76), "polynomial": (1412.89, 1092.19),
    "polynomial-200": (1496.46, 1048.51),
}


# --------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("df, critical", [(1, 12.7062047), (2, 4.3026527), (4, 2.7764451), (9, 2.2621572),
                                          (30, 2.0422725), (120, 1.9799304)])
def test_t_quantile_matches_the_t_table(df, critical):
    assert t_quantile(0.95, df) == pytest.approx(critical, abs=1e-6)


def test_t_quantile_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 7, 10, 25, 64, 333):
        for probability in (0.5, 0.9, 0.95, 0.99):
            assert t_quantile(probability, df) == pytest.approx(stats.t.ppf(0.5 + probability / 2, df), rel=1e-9)


def test_t_quantile_rejects_bad_arguments():
    with pytest.raises(ValueError, match="df"):
        t_quantile(0.95, 0)
    with pytest.raises(ValueError, match="probability"):
        t_quantile(1.0, 3)


def test_summarize():
    values, seeds = [3.0, 7.0, 5.0, 1.0, 9.0], [10, 11, 12, 13, 14]
    s = summarize(values, seeds)
    std = np.std(values, ddof=1)
    assert (s["n"], s["mean"], s["best"], s["best_seed"]) == (5, 5.0, 9.0, 14)
    assert s["std"] == pytest.approx(std)
    assert s["ci95_high"] - s["mean"] == pytest.approx(2.7764451 * std / math.sqrt(5))
    assert s["mean"] - s["ci95_low"] == pytest.approx(s["ci95_high"] - s["mean"])
    one = summarize([4.0], [2])
    assert one["mean"] == one["best"] == 4.0 and math.isnan(one["std"]) and math.isnan(one["ci95_low"])
    assert summarize([])["n"] == 0


# --------------------------------------------------------------------------- the grid
def test_budgets_are_the_presets():
    assert BUDGETS["paper"].config() == TrainConfig.preset("paper")
    assert BUDGETS["fast"].config() == TrainConfig.preset("fast")
    assert BUDGETS["paper"].seeds == tuple(range(10)) and BUDGETS["fast"].seeds == tuple(range(5))
    assert BUDGETS["paper-budget"].config() == TrainConfig.preset("paper-budget")
    paper_budget = BUDGETS["paper-budget"].config()
    assert paper_budget.iterations * paper_budget.envs_per_iteration <= 1000  # the paper's training episodes
    smoke = BUDGETS["smoke"].config()
    assert smoke.iterations < 20 and smoke.eval_episodes < 20 and len(BUDGETS["smoke"].seeds) >= 2


@pytest.mark.parametrize("budget", list(BUDGETS))
def test_every_method_has_a_config_on_every_budget(tmp_path, budget):
    runs = reproduce_runs(tmp_path, BUDGETS[budget], ["A", "B"], list(METHODS), [0])
    assert len(runs) == 2 * len(METHODS)


def test_grid_run_list(tmp_path):
    methods = ["aloha", "linear", "harmonic-regrow", "harmonic-masked", "polynomial-200", "dense", "oracle"]
    runs = reproduce_runs(tmp_path, BUDGETS["fast"], ["A", "B"], methods, [3, 4])
    # seed by seed, setup by setup, schemes first, then the learned rows in the order asked
    order = ["aloha", "oracle", "linear", "harmonic-regrow", "harmonic-masked", "polynomial-200", "dense"]
    assert [r.key for r in runs] == [f"{s}/{m}/seed-{seed}" for seed in (3, 4) for s in "AB" for m in order]
    for run in runs:
        setup, name, _ = run.key.split("/")
        assert run.path == tmp_path.resolve() / "runs" / setup / name / f"seed-{run.seed}"
        assert (run.config.setup, run.config.seed) == (setup, run.seed)
        assert run.scheme == METHODS[name].scheme
    configs = {r.key.split("/")[1]: r.config for r in runs if r.key.startswith("A/") and r.seed == 3}
    fast = TrainConfig.preset("fast")
    assert configs["linear"] == fast.replace(method="linear", seed=3)
    assert configs["harmonic-regrow"].prune_mode == "regrow" and configs["harmonic-masked"].prune_mode == "masked"
    assert configs["polynomial-200"].method == "polynomial"
    assert configs["polynomial-200"].i_start == 40  # the paper's 200 of 1000, scaled to 200 iterations
    assert configs["dense"].method == "dense"


@pytest.mark.parametrize("budget", list(BUDGETS))
def test_every_method_is_a_valid_config_in_every_budget(budget):
    for method in METHODS.values():
        config = method.config(BUDGETS[budget], "B", 7)
        assert (config.setup, config.seed) == ("B", 7)
        if "algo" in method.overrides:
            assert config.algo == method.overrides["algo"]
    assert METHODS["pai"].config(BUDGETS[budget], "A", 0).sparsity == 0.5


def test_paper_budget_starts_the_late_polynomial_at_200():
    (run,) = reproduce_runs("x", BUDGETS["paper"], ["A"], ["polynomial-200"], [0])
    assert run.config.i_start == 200 and run.config.iterations == 1000 and run.config.prune_mode == "regrow"


def test_a_run_directory_of_another_config_is_refused(tmp_path):
    (run,) = reproduce_runs(tmp_path, TINY, ["A"], ["linear"], [0])
    run.check_config()  # nothing there yet
    run.path.mkdir(parents=True)
    (run.path / "config.json").write_text(json.dumps(config_dict(run.config.replace(iterations=5))))
    with pytest.raises(RunDirError, match="iterations"):
        run.check_config()


@pytest.mark.parametrize("method", ["linear", "sticky"])
def test_run_directories_written_before_observe_snr_existed_are_accepted(tmp_path, method):
    (run,) = reproduce_runs(tmp_path, TINY, ["A"], [method], [0])
    identity = run.identity()
    values = identity.get("env", identity)  # a scheme's config.json holds its environment under "env"
    del values["observe_snr"]
    run.path.mkdir(parents=True)
    (run.path / "config.json").write_text(json.dumps(identity))
    run.check_config()


def test_schemes_play_the_held_out_episodes_of_the_learned_runs(tmp_path, monkeypatch):
    """Every slot's SNRs and primary-user states are the same in a scheme's evaluation and in the
    trainer's evaluation of the same seed."""
    played = {}
    step = BatchedDSAEnv.step

    def recording_step(self, actions):
        played[current].append((self.snr.copy(), self.pu_busy.copy()))
        return step(self, actions)

    monkeypatch.setattr(BatchedDSAEnv, "step", recording_step)
    config = TINY.config(setup="B", seed=5, eval_episodes=6)
    current = "learned"
    played[current] = []
    IAGCPPO(config).evaluate(config.eval_episodes, eval_seed(config.seed))  # as the trainer evaluates
    current = "scheme"
    played[current] = []
    summary = evaluate_scheme(Run("B/sticky/seed-5", tmp_path, 5, config, scheme="sticky"))
    assert len(played["learned"]) == len(played["scheme"]) == config.horizon
    for (snr, busy), (snr2, busy2) in zip(played["learned"], played["scheme"]):
        assert snr.shape == (6, 2, 2) and np.array_equal(snr, snr2) and np.array_equal(busy, busy2)
    assert busy.any() and not busy.all()
    assert summary["eval_seed"] == eval_seed(5) and summary["eval_episodes"] == 6


# --------------------------------------------------------------------------- reports
def write_run(path, config, summary, records):
    """A finished run directory written by hand: config.json, metrics.jsonl, summary.json."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (path / "summary.json").write_text(json.dumps(summary))


def fake_grid(out, rewards, schemes):
    """Two seeds of harmonic-masked and dense in setups A and B, every number known; ``rewards``:
    (setup, method, seed) -> {iteration: eval reward}, the last one final; ``schemes``: (setup, name, seed) -> reward."""
    for (setup, name, seed), by_iteration in rewards.items():
        config = TINY.config(setup=setup, seed=seed, **METHODS[name].overrides)
        sparse = name != "dense"
        records = [{"iteration": i, "sparsity": [0.05 * i * sparse, 0.15 * i * sparse], "pruned": i % 2 == 0,
                    **({"eval_reward": by_iteration[i]} if i in by_iteration else {})} for i in range(1, 5)]
        summary = {"final_eval_reward": by_iteration[4], "sparsity_per_agent": records[-1]["sparsity"]}
        write_run(out / "runs" / setup / name / f"seed-{seed}", config_dict(config), summary, records)
    for (setup, name, seed), reward in schemes.items():
        write_run(out / "runs" / setup / name / f"seed-{seed}", {"scheme": name},
                  {"final_eval_reward": reward, "sparsity_per_agent": None}, [])
    grid.write_manifest(out, {"command": "reproduce", "budget": "tiny", "setups": ["A", "B"],
                              "methods": ["aloha", "sticky", "oracle", "ac", "dense", "harmonic-masked", "cosine"],
                              "seeds": [0, 1]})


REWARDS = {
    ("A", "harmonic-masked", 0): {2: 900.0, 4: 1500.0}, ("A", "harmonic-masked", 1): {2: 1000.0, 4: 1900.0},
    ("A", "dense", 0): {2: 800.0, 4: 1200.0}, ("A", "dense", 1): {2: 850.0, 4: 1250.0},
    ("B", "harmonic-masked", 0): {2: 700.0, 4: 1100.0},  # seed 1 of B failed
}
SCHEMES = {("A", "aloha", 0): 990.0, ("A", "aloha", 1): 1010.0, ("A", "sticky", 0): 2400.0, ("A", "sticky", 1): 2380.0,
           ("A", "oracle", 0): 2660.0, ("A", "oracle", 1): 2662.0, ("B", "aloha", 0): 800.0}


def test_table_rows_statistics_and_paper_values(tmp_path):
    fake_grid(tmp_path, REWARDS, SCHEMES)
    failed = tmp_path / "runs" / "B" / "harmonic-masked" / "seed-1"
    failed.mkdir(parents=True)
    (failed / "error.txt").write_text("Traceback ...\nValueError: broken on purpose\n")
    built = report.write_report(tmp_path)

    import csv
    with open(tmp_path / "table1.csv") as f:
        rows = {(r["setup"], r["method"]): r for r in csv.DictReader(f)}
    assert len(rows) == 14  # 7 methods x 2 setups, empty ones included
    for (setup, name), row in rows.items():
        expected = PAPER_TABLE_I.get(name)
        assert row["paper"] == ("" if expected is None else str(expected["AB".index(setup)])), (setup, name)
    harmonic = rows["A", "harmonic-masked"]
    assert (float(harmonic["best"]), harmonic["best_seed"], harmonic["n"]) == (1900.0, "1", "2")
    assert float(harmonic["mean"]) == pytest.approx(1700.0)
    assert float(harmonic["std"]) == pytest.approx(np.std([1500, 1900], ddof=1))
    assert float(harmonic["ci95_high"]) == pytest.approx(1700 + 12.7062047 * np.std([1500, 1900], ddof=1) / math.sqrt(2))
    assert float(harmonic["final_sparsity"]) == pytest.approx(0.4)  # mean of 0.2 and 0.6 over agents
    assert harmonic["pruning"] == "95% masked"  # from config.json
    assert rows["A", "dense"]["pruning"] == "dense" and float(rows["A", "dense"]["final_sparsity"]) == 0.0
    assert rows["A", "aloha"]["kind"] == "scheme" and float(rows["A", "aloha"]["mean"]) == 1000.0
    assert rows["B", "harmonic-masked"]["n"] == "1" and rows["B", "harmonic-masked"]["std"] == ""
    assert rows["B", "cosine"]["n"] == "0" and rows["B", "cosine"]["mean"] == ""

    markdown = (tmp_path / "table1.md").read_text()
    assert "| A | harmonic annealing (`harmonic-masked`) | 95% masked | 2/2 | 1900.0 (seed 1) | 1700.0 ± 282.8 |" in markdown
    assert "ValueError: broken on purpose" in markdown and str(failed) in markdown
    assert built["failed"] == [{"run": str(failed), "error": "ValueError: broken on purpose"}]
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["rows"][0]["method"] == "aloha" and saved["budget"] == "tiny"


def test_figures_plot_the_metrics(tmp_path, monkeypatch):
    fake_grid(tmp_path, REWARDS, SCHEMES)
    drawn = {}
    save = figures.save

    def keep(fig, path):
        drawn[path.name] = fig
        return save(fig, path)

    monkeypatch.setattr(figures, "save", keep)
    report.write_report(tmp_path)
    for name in (report.FIG1, report.FIG2):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / name).stat().st_size > 10_000

    def lines(fig, panel):
        ax = fig.axes[panel]
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title() and fig.legends
        return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}

    training = lines(drawn[report.FIG2], 0)
    assert training["harmonic-masked"] == ([2, 4], [950.0, 1700.0])
    assert training["dense"] == ([2, 4], [825.0, 1225.0])
    assert training["aloha (mean over seeds)"][1] == [1000.0, 1000.0]
    assert training["sticky (mean over seeds)"][1] == [2390.0, 2390.0]
    assert training["oracle (mean over seeds)"][1] == [2661.0, 2661.0]
    assert set(lines(drawn[report.FIG2], 1)) == {"harmonic-masked", "aloha (mean over seeds)"}
    bands = [c.get_paths()[0].vertices[:, 1] for c in drawn[report.FIG2].axes[0].collections]  # dense, harmonic
    assert bands[1].max() == pytest.approx(1700 + np.std([1500, 1900], ddof=1))
    assert bands[0].min() == pytest.approx(825 - np.std([800, 850], ddof=1))

    # Fig. 1: the sparsity measured at prune events (even iterations), mean over agents and seeds; dense has none
    sparsity = lines(drawn[report.FIG1], 0)
    assert set(sparsity) == {"harmonic-masked"}
    assert sparsity["harmonic-masked"][0] == [2, 4]
    assert sparsity["harmonic-masked"][1] == pytest.approx([0.2, 0.4])


def test_report_needs_a_reproduce_directory(tmp_path):
    with pytest.raises(RunDirError, match="holds no experiment.json"):
        report.write_report(tmp_path)
    (tmp_path / "experiment.json").write_text('{"command": "reprod')  # what a crash mid-write leaves
    with pytest.raises(RunDirError, match="experiment.json.* is damaged"):
        report.write_report(tmp_path)


def test_a_damaged_run_config_is_refused_before_any_run(tmp_path):
    (run,) = reproduce_runs(tmp_path, TINY, ["A"], ["linear"], [0])
    run.path.mkdir(parents=True)
    (run.path / "config.json").write_text("{not json")
    with pytest.raises(RunDirError, match="config.json.* is not valid JSON"):
        run.check_config()


# --------------------------------------------------------------------------- executors
def test_a_failing_run_is_reported_and_the_others_finish(tmp_path):
    """In worker processes: a run whose config cannot run (a CUDA device here) fails, the others go on."""
    good = reproduce_runs(tmp_path, TINY, ["A"], ["aloha", "linear"], [0])
    bad = Run("A/broken/seed-0", tmp_path / "runs" / "A" / "broken" / "seed-0", 0, TINY.config(device="cuda:99"))
    logged = []
    outcomes = run_all([bad, *good], LocalExecutor(jobs=2, threads=1), log=logged.append)
    status = {o["key"]: o["status"] for o in outcomes}
    assert status == {"A/broken/seed-0": "failed", "A/aloha/seed-0": "done", "A/linear/seed-0": "done"}
    assert "device" in (bad.path / "error.txt").read_text()
    assert any(line.startswith("FAILED A/broken/seed-0") and str(bad.path) in line for line in logged)
    assert all(run.status() == "done" for run in good) and bad.status() == "failed"


# --------------------------------------------------------------------------- sweeps
def test_parse_grid_reads_each_fields_type():
    parsed = sweep.parse_grid(["i_prune=1,5", "amplitude=0,0.05", "prune-mode=masked,regrow", "period=none,50",
                               "normalize_rewards=true,false"])
    assert parsed == {"i_prune": [1, 5], "amplitude": [0.0, 0.05], "prune_mode": ["masked", "regrow"],
                      "period": [None, 50], "normalize_rewards": [True, False]}
    assert type(parsed["amplitude"][0]) is float and type(parsed["i_prune"][0]) is int


@pytest.mark.parametrize("items, message", [
    (["learning_rate=1"], "unknown field"),
    (["i_prune=1,x"], "cannot read 'x'"),
    (["i_prune=1,1"], "repeated"),
    (["seed=1,2"], "--seeds"),
    (["i_prune"], "FIELD=V1,V2"),
    (["i_prune=1", "i_prune=2"], "twice"),
    (["normalize_rewards=maybe"], "boolean"),
])
def test_parse_grid_errors_name_the_field(items, message):
    with pytest.raises(ValueError, match=message):
        sweep.parse_grid(items)


def test_sweep_runs_fail_on_an_invalid_point_before_any_run(tmp_path):
    with pytest.raises(ValueError, match="i_start=9"):
        sweep.sweep_runs(tmp_path, TINY, {"i_start": [0, 9]}, [0])  # i_start must be below the 4 iterations
    runs = sweep.sweep_runs(tmp_path, TINY, {"i_prune": [1, 2], "amplitude": [0.0, 0.1]}, [0, 1])
    assert len(runs) == 8 and runs[0].key == "i_prune=1,amplitude=0.0/seed-0"
    assert runs[3].config == TINY.config(i_prune=2, amplitude=0.1, seed=0)


def test_sweep_main_effect_averages_the_other_fields_per_seed():
    grid_ = {"a": [1, 2], "b": ["x", "y"]}
    rewards = {"a=1,b=x": {0: 10.0, 1: 20.0}, "a=1,b=y": {0: 30.0, 1: 40.0},
               "a=2,b=x": {0: 50.0, 1: 60.0}, "a=2,b=y": {0: 70.0}}
    effect = sweep.main_effect(grid_, "a", rewards)
    # a = 1: seed 0 mean(10, 30) = 20, seed 1 mean(20, 40) = 30; a = 2: seed 0 mean(50, 70) = 60, seed 1 60
    assert effect["mean"] == pytest.approx([25.0, 60.0])
    assert effect["std"] == pytest.approx([np.std([20.0, 30.0], ddof=1), 0.0])
    assert effect["n"] == [2, 2]
