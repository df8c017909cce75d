"""A sensitivity study: the runs of every point of a grid over ``TrainConfig`` fields, a table of
mean ± std per grid point and one plot per swept field.

Runs live in ``DIR/runs/FIELD=V,FIELD=V/seed-S``; the outputs are ``DIR/sweep.md``, ``sweep.csv``,
``sweep_FIELD.png`` and ``report.json``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import typing
from pathlib import Path

import numpy as np

from hapruned.algos.config import TrainConfig
from hapruned.experiments import figures
from hapruned.experiments.grid import RUNS_DIR, Budget, Run, run_key
from hapruned.experiments.report import (
    REPORT_JSON, STAT_HEADER, json_safe, markdown_table, notes, reward_stats, seed_results, seed_text, stat_cells,
    write_csv,
)

SWEEP_MD, SWEEP_CSV = "sweep.md", "sweep.csv"
STAT_COLUMNS = ("n", "seeds_total", "mean", "std", "ci95_low", "ci95_high", "best", "best_seed", "final_sparsity")
NOT_SWEPT = {"seed": "give the seeds with --seeds", "seeds": "give the seeds with --seeds",
             "agent_sparsity": "its values are lists; sweep sparsity instead"}


def sweepable_fields() -> dict:
    return {f.name: f for f in dataclasses.fields(TrainConfig) if f.init and f.name not in NOT_SWEPT}


def parse_grid(items) -> dict[str, list]:
    """``["i_prune=1,5", "amplitude=0,0.1"]`` -> {"i_prune": [1, 5], "amplitude": [0.0, 0.1]}, each value
    read as its field's type (``none`` for the fields whose default is None); ValueError on a bad one."""
    fields, hints = sweepable_fields(), typing.get_type_hints(TrainConfig)
    grid = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not text.strip():
            raise ValueError(f"--grid {item!r}: write FIELD=V1,V2,... (e.g. amplitude=0,0.05,0.1)")
        if name in NOT_SWEPT:
            raise ValueError(f"--grid {name}: cannot be swept; {NOT_SWEPT[name]}")
        if name not in fields:
            raise ValueError(f"--grid {name}: unknown field; choose from {', '.join(fields)}")
        if name in grid:
            raise ValueError(f"--grid {name}: given twice; put all its values in one FIELD=V1,V2,...")
        values = [_parse_value(fields[name], hints[name], part.strip()) for part in text.split(",")]
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"--grid {name}: a value is repeated in {text!r}")
        grid[name] = values
    if not grid:
        raise ValueError("--grid: give at least one FIELD=V1,V2,...")
    return grid


def _parse_value(field: dataclasses.Field, hint, text: str):
    if text.lower() == "none" and field.default is None:
        return None
    if hint is bool:
        truth = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if text.lower() not in truth:
            raise ValueError(f"--grid {field.name}: {text!r} is not a boolean (true or false)")
        return truth[text.lower()]
    parse = field.metadata.get("parse") or (hint if hint in (int, float, str) else str)
    try:
        return parse(text)
    except ValueError:
        raise ValueError(f"--grid {field.name}: cannot read {text!r} as {getattr(parse, '__name__', 'its type')}") from None


def grid_points(grid: dict) -> list[dict]:
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def point_name(point: dict) -> str:
    """{"i_prune": 5, "period": None} -> ``"i_prune=5,period=none"``, the point's directory name."""
    return ",".join(f"{name}={'none' if value is None else value}" for name, value in point.items())


def sweep_runs(out_dir, budget: Budget, grid: dict, seeds) -> list[Run]:
    """Every (point, seed) run; ValueError naming the point when a combination is not a valid config."""
    out = Path(out_dir).resolve()
    runs = []
    for seed in seeds:
        for point in grid_points(grid):
            try:
                config = budget.config(**point, seed=seed)
            except ValueError as err:
                raise ValueError(f"--grid point {point_name(point)}: {err}") from None
            key = run_key(point_name(point), seed)
            runs.append(Run(key, out / RUNS_DIR / key, seed, config))
    return runs


def sweep_report(out_dir, manifest: dict) -> dict:
    out, grid, seeds = Path(out_dir), manifest["grid"], manifest["seeds"]
    rows, failed, unfinished, rewards = [], [], [], {}
    for point in grid_points(grid):
        name = point_name(point)
        results = seed_results({seed: out / RUNS_DIR / run_key(name, seed) for seed in seeds})
        failed += results["failed"]
        unfinished += results["unfinished"]
        rewards[name] = {seed: s["final_eval_reward"] for seed, s in zip(results["seeds"], results["summaries"])}
        rows.append({**point, "seeds_total": len(seeds), **reward_stats(results)})
    return {**manifest, "rows": rows, "effects": {field: main_effect(grid, field, rewards) for field in grid},
            "failed": failed, "unfinished": unfinished}


def main_effect(grid: dict, field: str, rewards: dict) -> dict:
    """For each value of ``field``: per seed, the mean reward over the grid points with that value
    (the other fields averaged out); then mean and sample std over the seeds."""
    effect = {"values": grid[field], "mean": [], "std": [], "n": []}
    for value in grid[field]:
        names = [point_name(p) for p in grid_points(grid) if p[field] == value]
        seeds = sorted({seed for name in names for seed in rewards[name]})
        per_seed = [np.mean([rewards[n][s] for n in names if s in rewards[n]]) for s in seeds]
        effect["mean"].append(float(np.mean(per_seed)) if per_seed else float("nan"))
        effect["std"].append(float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0)
        effect["n"].append(len(per_seed))
    return effect


def write_sweep_report(out_dir, manifest: dict) -> dict:
    out = Path(out_dir)
    report = sweep_report(out, manifest)
    fields = list(manifest["grid"])
    (out / SWEEP_MD).write_text(sweep_markdown(report))
    write_csv(out / SWEEP_CSV, report["rows"], [*fields, *STAT_COLUMNS])
    files = [out / SWEEP_MD, out / SWEEP_CSV]
    for field, effect in report["effects"].items():
        others = [f for f in fields if f != field]
        title = f"Final evaluation reward against {field}" + (f"\n(averaged over {', '.join(others)})" if others else "")
        figure = figures.errorbar_figure(field, [_text(v) for v in effect["values"]], effect["mean"], effect["std"], title)
        files.append(figures.save(figure, out / f"sweep_{field}.png"))
    report["files"] = [str(path) for path in [*files, out / REPORT_JSON]]
    (out / REPORT_JSON).write_text(json.dumps(json_safe(report), indent=1) + "\n")
    return report


def sweep_markdown(report: dict) -> str:
    fields = list(report["grid"])
    header = (*fields, "seeds", *STAT_HEADER)
    cells = [(*(_text(row[f]) for f in fields), f"{row['n']}/{row['seeds_total']}", *stat_cells(row))
             for row in report["rows"]]
    lines = [f"# Sweep: final evaluation reward, budget `{report['budget']}`, seeds {seed_text(report['seeds'])}", "",
             markdown_table(header, cells), *notes(report)]
    return "\n".join(lines) + "\n"


def _text(value) -> str:
    return "none" if value is None else str(value)
