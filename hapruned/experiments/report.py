"""Table I, Fig. 1 and Fig. 2 of the paper, and ``report.json``, built from the run directories of
a reproduce grid (no training), plus the helpers the sweep's report shares."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from hapruned.algos.trainer import CONFIG_FILE, METRICS_FILE, RunDirError, load_config, load_metrics, read_config_file
from hapruned.experiments import figures
from hapruned.experiments.grid import (
    BASELINE_LEVELS, BUDGETS, ERROR_FILE, METHODS, RUNS_DIR, read_manifest, read_summary, run_key, run_status,
)
from hapruned.experiments.stats import summarize
from hapruned.validation import is_integer, is_number

TABLE_MD, TABLE_CSV = "table1.md", "table1.csv"
FIG1, FIG2 = "fig1_sparsity.png", "fig2_training.png"
REPORT_JSON = "report.json"
STAT_HEADER = ("best seed", "mean ± std", "95% CI", "final sparsity")
TABLE_COLUMNS = ("setup", "method", "label", "kind", "pruning", "n", "seeds_total", "best",
                 "best_seed", "mean", "std", "ci95_low", "ci95_high", "final_sparsity", "paper")


def write_report(out_dir) -> dict:
    """Rebuild the outputs of the reproduce or sweep call recorded in ``out_dir``; returns the report."""
    manifest = read_manifest(out_dir)
    if manifest["command"] == "sweep":
        from hapruned.experiments.sweep import write_sweep_report

        return write_sweep_report(out_dir, manifest)
    return write_reproduce_report(out_dir, manifest)


def print_report(report: dict) -> None:
    """The table of a written report (its first file), then the list of files."""
    print(Path(report["files"][0]).read_text())
    print("wrote " + ", ".join(report["files"]))


# --------------------------------------------------------------------------- one group of runs
def seed_results(paths: dict) -> dict:
    """The runs of one table row or grid point (``paths``: seed -> run directory): the finished ones'
    seeds and summaries, the failed ones with the last line of their error, the unfinished ones and the
    missing ones (never started, or deleted). RunDirError when a finished run's summary is damaged."""
    status = {seed: run_status(path) for seed, path in paths.items()}
    done = [seed for seed in paths if status[seed] == "done"]
    return {
        "seeds": done,
        "summaries": [read_summary(paths[seed]) for seed in done],
        "failed": [{"run": str(paths[seed]), "error": _last_line(paths[seed] / ERROR_FILE)}
                   for seed in paths if status[seed] == "failed"],
        "unfinished": [str(paths[seed]) for seed in paths if status[seed] == "started"],
        "missing": [str(paths[seed]) for seed in paths if status[seed] == "new"],
    }


def reward_stats(results: dict) -> dict:
    """Summary statistics of the final evaluation rewards over the finished seeds, and the final
    sparsity (mean over agents, then seeds; NaN for schemes)."""
    rewards = [s["final_eval_reward"] for s in results["summaries"]]
    sparsities = [float(np.mean(s["sparsity_per_agent"])) for s in results["summaries"] if s.get("sparsity_per_agent")]
    return {**summarize(rewards, results["seeds"]),
            "final_sparsity": float(np.mean(sparsities)) if sparsities else float("nan")}


def seed_curve(paths: list, value) -> dict | None:
    """``value(record)`` over the iterations of every run in ``paths`` (None where it is absent), as
    {"iteration", "mean", "std" (sample, 0 for one seed), "n"}; None when no run has it."""
    per_run = [{r["iteration"]: value(r) for r in read_metrics(p) if value(r) is not None} for p in paths]
    iterations = sorted(set.intersection(*(set(d) for d in per_run))) if per_run else []
    if not iterations:
        return None
    values = np.array([[d[i] for i in iterations] for d in per_run], dtype=float)
    std = values.std(0, ddof=1) if len(per_run) > 1 else np.zeros(len(iterations))
    return {"iteration": iterations, "mean": values.mean(0).tolist(), "std": std.tolist(), "n": len(per_run)}


def read_metrics(run_dir: Path) -> list[dict]:
    """A finished run's metrics records; RunDirError naming the file when one is not a record whose
    iteration, evaluation reward and sparsity the figures can read."""
    path = run_dir / METRICS_FILE
    try:
        records = load_metrics(run_dir)
    except UnicodeDecodeError:
        records = [None]
    for number, record in enumerate(records, 1):
        if not (isinstance(record, dict) and is_integer(record.get("iteration"))
                and (record.get("eval_reward") is None or is_number(record["eval_reward"]))
                and (record.get("sparsity") is None or isinstance(record["sparsity"], list)
                     and all(is_number(p) for p in record["sparsity"]))):
            raise RunDirError(f"{str(path)!r} is damaged (record {number} is not a metrics record); delete its run "
                              f"directory and run the command that made it again")
    return records


def eval_reward(record):
    return record.get("eval_reward")


def event_sparsity(record):
    """The measured sparsity (mean over agents) right after a prune event: in ``regrow`` mode the
    pruned weights move again at the next update, so only then is it what the schedule imposed."""
    if record.get("sparsity") is None or not record.get("pruned", True):
        return None
    return float(np.mean(record["sparsity"]))


# --------------------------------------------------------------------------- reproduce
def reproduce_report(out_dir, manifest: dict) -> dict:
    """Table I rows, the curves of both figures and the failed/unfinished runs of the grid in ``manifest``."""
    out = Path(out_dir)
    rows, failed, unfinished, missing = [], [], [], []
    fig1 = {setup: {} for setup in manifest["setups"]}
    fig2 = {setup: {} for setup in manifest["setups"]}
    for setup in manifest["setups"]:
        for name in manifest["methods"]:
            method = METHODS[name]
            paths = {seed: out / RUNS_DIR / run_key(setup, name, seed) for seed in manifest["seeds"]}
            results = seed_results(paths)
            failed += results["failed"]
            unfinished += results["unfinished"]
            missing += results["missing"]
            rows.append({
                "setup": setup, "method": name, "label": method.label,
                "kind": "scheme" if method.scheme else "learned",
                "pruning": _pruning(paths.values()), "seeds_total": len(paths), **reward_stats(results),
                "paper": None if method.paper is None else method.paper["AB".index(setup)],
            })
            if method.scheme is None and results["seeds"]:
                done = [paths[seed] for seed in results["seeds"]]
                rewards, sparsity = seed_curve(done, eval_reward), seed_curve(done, event_sparsity)
                if rewards is not None:
                    fig2[setup][name] = rewards
                if sparsity is not None and max(sparsity["mean"]) > 0:  # Fig. 1 shows the pruning schedules
                    fig1[setup][name] = sparsity
    levels = {setup: {row["method"]: row["mean"] for row in rows
                      if row["setup"] == setup and row["method"] in BASELINE_LEVELS and row["n"]}
              for setup in manifest["setups"]}
    return {
        **manifest, "rows": rows,
        "failed": failed, "unfinished": unfinished, "missing": missing,
        "fig1_sparsity": fig1, "fig2_training": {"curves": fig2, "levels": levels},
    }


def write_reproduce_report(out_dir, manifest: dict) -> dict:
    out = Path(out_dir)
    report = reproduce_report(out, manifest)
    (out / TABLE_MD).write_text(table_markdown(report))
    write_csv(out / TABLE_CSV, report["rows"], TABLE_COLUMNS)
    names = [name for name, method in METHODS.items() if method.scheme is None]
    figures.save(figures.curves_figure(
        report["fig1_sparsity"], "Fig. 1: actor sparsity measured after each prune event (mean over agents and seeds)",
        "actor sparsity (fraction of weights pruned)", names=names, steps=True), out / FIG1)
    figures.save(figures.curves_figure(
        report["fig2_training"]["curves"], "Fig. 2: evaluation reward during training (mean ± std over seeds)",
        figures.REWARD_LABEL, levels=report["fig2_training"]["levels"], names=names), out / FIG2)
    report["files"] = [str(out / name) for name in (TABLE_MD, TABLE_CSV, FIG1, FIG2, REPORT_JSON)]
    (out / REPORT_JSON).write_text(json.dumps(json_safe(report), indent=1) + "\n")
    return report


def table_markdown(report: dict) -> str:
    budget = report["budget"]
    about = BUDGETS[budget].description if budget in BUDGETS else budget
    lines = [
        f"# Table I: final evaluation reward, budget `{budget}` ({about}), seeds {seed_text(report['seeds'])}",
        "",
        "Each run's reward is its final evaluation, the mean episode reward Σ_t r_t over the held-out "
        "episodes; every method plays the same episodes for a given seed. The paper reports the best seed.",
        "",
    ]
    header = ("setup", "method", "pruning", "seeds", *STAT_HEADER, "paper (best seed)")
    cells = []
    for row in report["rows"]:
        cells.append((row["setup"], f"{row['label']} (`{row['method']}`)", row["pruning"],
                      f"{row['n']}/{row['seeds_total']}", *stat_cells(row),
                      "—" if row["paper"] is None else f"{row['paper']:.2f}"))
    lines.append(markdown_table(header, cells))
    lines += notes(report)
    return "\n".join(lines) + "\n"


def notes(report: dict) -> list[str]:
    """Lines under a table naming the failed and unfinished runs."""
    lines = []
    for failure in report["failed"]:
        lines.append(f"Failed: {failure['run']}: {failure['error']}")
    if report["unfinished"]:
        lines.append(f"Unfinished ({len(report['unfinished'])} runs): run the same command again to resume them.")
    if report["missing"]:
        missing = report["missing"]
        lines.append(f"Missing ({len(missing)} runs, e.g. {missing[0]}): never started, or their directories were "
                     f"deleted; run the same command again to train them.")
    return [""] + [f"- {line}" for line in lines] if lines else []


# --------------------------------------------------------------------------- formatting
def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict], columns) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if _missing(v) else v for k, v in row.items()})


def stat_cells(row) -> tuple[str, str, str, str]:
    """The "best seed", "mean ± std", "95% CI" and "final sparsity" cells of a row of :func:`reward_stats`."""
    if not row["n"]:
        return "", "", "", ""
    return (
        f"{row['best']:.1f} (seed {row['best_seed']})",
        f"{row['mean']:.1f}" + ("" if math.isnan(row["std"]) else f" ± {row['std']:.1f}"),
        "" if math.isnan(row["ci95_low"]) else f"[{row['ci95_low']:.1f}, {row['ci95_high']:.1f}]",
        "" if _missing(row["final_sparsity"]) else f"{row['final_sparsity']:.3f}",
    )


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def seed_text(seeds) -> str:
    seeds = list(seeds)
    contiguous = seeds == list(range(seeds[0], seeds[0] + len(seeds))) if seeds else False
    return f"{seeds[0]}-{seeds[-1]}" if contiguous and len(seeds) > 1 else ",".join(map(str, seeds))


def _pruning(paths) -> str:
    """What a row's runs prune, read from the first config.json among them: "95% masked", "dense", "—"."""
    for path in paths:
        if (path / CONFIG_FILE).exists():
            if "scheme" in read_config_file(path):
                return "—"
            config = load_config(path)
            if config.method == "dense":
                return "dense"
            if config.algo == "pai":
                return f"{config.sparsity:.0%} fixed random masks"
            return f"{config.sparsity:.0%} {config.prune_mode}"
    return ""


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def json_safe(value):
    """NaN -> None, so report.json is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
