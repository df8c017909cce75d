"""A sensitivity study: the runs of every point of a grid over ``TrainConfig`` fields, a table of
mean ± std per grid point and one plot per swept field.

Two kinds of grid: the full grid (every combination of the fields' values), or one field at a time
(``one_at_a_time``: a base point with the budget's values, plus one point per value of each field with
every other field at its base value, as an ablation). ``fixed`` values apply to every point.

Runs live in ``DIR/runs/FIELD=V,FIELD=V/seed-S`` (``DIR/runs/base/seed-S`` for the base point); the
outputs are ``DIR/sweep.md``, ``sweep.csv``, ``sweep_FIELD.png`` and ``report.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import re
import typing
from pathlib import Path

import numpy as np

from hapruned.algos.config import TrainConfig
from hapruned.algos.trainer import check_device, training_memory
from hapruned.experiments import figures
from hapruned.experiments.grid import RUNS_DIR, Budget, Run, run_key
from hapruned.experiments.report import (
    REPORT_JSON, STAT_HEADER, json_safe, markdown_table, notes, reward_stats, seed_results, seed_text, stat_cells,
    write_csv,
)
from hapruned.resources import check_memory
from hapruned.validation import did_you_mean

SWEEP_MD, SWEEP_CSV = "sweep.md", "sweep.csv"
STAT_COLUMNS = ("n", "seeds_total", "mean", "std", "ci95_low", "ci95_high", "best", "best_seed", "final_sparsity")
NOT_SWEPT = {"seed": "give the seeds with --seeds", "seeds": "give the seeds with --seeds"}
# Fields whose value may be a list (one entry per channel or agent): in --grid, V1/V2/... is one such value.
LIST_FIELDS = ("pu_prob", "agent_sparsity")


def sweepable_fields() -> dict:
    return {f.name: f for f in dataclasses.fields(TrainConfig) if f.init and f.name not in NOT_SWEPT}


def parse_grid(items, flag: str = "--grid") -> dict[str, list]:
    """``["i_prune=1,5", "amplitude=0,0.1"]`` -> {"i_prune": [1, 5], "amplitude": [0.0, 0.1]}, each value
    read as its field's type (``none`` for the fields whose default is None); ValueError on a bad one.
    A list value of the ``LIST_FIELDS`` is written with ``/`` between its entries (``pu_prob=0.1/0.2,0.3``:
    the per-channel list (0.1, 0.2), then 0.3 on every channel). With ``flag="--set"`` each item holds one
    value, commas included (e.g. ``pu_prob=0.1,0.2``)."""
    fields, hints = sweepable_fields(), typing.get_type_hints(TrainConfig)
    grid = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not text.strip():
            raise ValueError(f"{flag} {item!r}: write FIELD=V1,V2,... (e.g. amplitude=0,0.05,0.1)")
        if name in NOT_SWEPT:
            raise ValueError(f"{flag} {name}: cannot be swept; {NOT_SWEPT[name]}")
        if name not in fields:
            raise ValueError(f"{flag} {name}: unknown field{did_you_mean(name, fields)}; choose from {', '.join(fields)}")
        if name in grid:
            raise ValueError(f"{flag} {name}: given twice; put all its values in one FIELD=V1,V2,...")
        parts = [text] if flag == "--set" else text.split(",")
        if name in LIST_FIELDS:
            parts = [part.replace("/", ",") for part in parts]
        values = [_parse_value(fields[name], hints[name], part.strip(), flag) for part in parts]
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"{flag} {name}: a value is repeated in {text!r}")
        grid[name] = values
    if not grid:
        raise ValueError(f"{flag}: give at least one FIELD=V1,V2,...")
    return grid


def _parse_value(field: dataclasses.Field, hint, text: str, flag: str):
    if text.lower() == "none" and field.default is None:
        return None
    if hint is bool:
        truth = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if text.lower() not in truth:
            raise ValueError(f"{flag} {field.name}: {text!r} is not a boolean (true or false)")
        return truth[text.lower()]
    parse = field.metadata.get("parse") or (hint if hint in (int, float, str) else str)
    try:
        return parse(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise ValueError(f"{flag} {field.name}: cannot read {text!r} as {getattr(parse, '__name__', 'its type')}") from None


def check_grid(manifest: dict) -> None:
    """ValueError naming the first of a sweep manifest's ``grid``, ``fixed`` and ``one_at_a_time`` that is
    not what :func:`parse_grid` and the sweep command write (every point must name a directory under runs/)."""
    fields = sweepable_fields()
    for key in ("grid", "fixed"):
        values = manifest.get(key)
        if not isinstance(values, dict) or (key == "grid" and not values):
            raise ValueError(f"{key} must be an object of fields and their values, got {values!r}")
        for name, value in values.items():
            if name not in fields:
                raise ValueError(f"{key} names {name!r}, which is no sweepable field")
            listed = value if key == "grid" else [value]
            if not isinstance(listed, list) or not listed:
                raise ValueError(f"grid {name} must be a list of values, got {value!r}")
            for v in listed:
                if not (v is None or isinstance(v, (bool, int, float, str, list))) or "/" in _text(v):
                    raise ValueError(f"{key} {name} holds {v!r}")
    if not isinstance(manifest.get("one_at_a_time", False), bool):
        raise ValueError(f"one_at_a_time must be true or false, got {manifest['one_at_a_time']!r}")


def grid_points(grid: dict, one_at_a_time: bool = False) -> list[dict]:
    """The points of ``grid``: every combination, or the base point ``{}`` and one field changed at a time."""
    if one_at_a_time:
        return [{}] + [{name: value} for name, values in grid.items() for value in values]
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def point_name(point: dict) -> str:
    """{"i_prune": 5, "period": None} -> ``"i_prune=5,period=none"``, the point's directory name
    (``"base"`` for the base point of a one-at-a-time sweep)."""
    return ",".join(f"{name}={_text(value)}" for name, value in point.items()) or "base"


def sweep_runs(out_dir, budget: Budget, grid: dict, seeds, fixed: dict | None = None,
               one_at_a_time: bool = False) -> list[Run]:
    """Every (point, seed) run; ValueError naming the point when a combination is not a valid config."""
    out = Path(out_dir).resolve()
    runs = []
    for seed in seeds:
        for point in grid_points(grid, one_at_a_time):
            try:
                config = budget.config(**(fixed or {}), **point, seed=seed)
                # what training itself would refuse, refused before any run starts
                check_device(config.device)
                check_memory(training_memory(config))
            except ValueError as err:  # the configs' messages name fields as Class.field; a grid names them alone
                message = re.sub(r"\b(TrainConfig|DSAConfig)\.", "", str(err))
                raise ValueError(f"--grid point {point_name(point)}: {message}") from None
            key = run_key(point_name(point), seed)
            runs.append(Run(key, out / RUNS_DIR / key, seed, config))
    return runs


def sweep_report(out_dir, manifest: dict) -> dict:
    out, grid, seeds = Path(out_dir), manifest["grid"], manifest["seeds"]
    one_at_a_time = manifest.get("one_at_a_time", False)
    rows, failed, unfinished, missing, rewards = [], [], [], [], {}
    for point in grid_points(grid, one_at_a_time):
        name = point_name(point)
        results = seed_results({seed: out / RUNS_DIR / run_key(name, seed) for seed in seeds})
        failed += results["failed"]
        unfinished += results["unfinished"]
        missing += results["missing"]
        rewards[name] = {seed: s["final_eval_reward"] for seed, s in zip(results["seeds"], results["summaries"])}
        columns = {"change": name} if one_at_a_time else point
        rows.append({**columns, "seeds_total": len(seeds), **reward_stats(results)})
    effects = {field: (single_effect if one_at_a_time else main_effect)(grid, field, rewards) for field in grid}
    return {**manifest, "rows": rows, "effects": effects, "failed": failed, "unfinished": unfinished, "missing": missing}


def single_effect(grid: dict, field: str, rewards: dict) -> dict:
    """One-at-a-time: the base point, then each value of ``field`` alone; mean and sample std over seeds."""
    effect = {"values": ["base", *grid[field]], "mean": [], "std": [], "n": []}
    for name in ["base", *(point_name({field: value}) for value in grid[field])]:
        per_seed = list(rewards[name].values())
        effect["mean"].append(float(np.mean(per_seed)) if per_seed else float("nan"))
        effect["std"].append(float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0)
        effect["n"].append(len(per_seed))
    return effect


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
    one_at_a_time = manifest.get("one_at_a_time", False)
    (out / SWEEP_MD).write_text(sweep_markdown(report))
    write_csv(out / SWEEP_CSV, report["rows"], [*(["change"] if one_at_a_time else fields), *STAT_COLUMNS])
    files = [out / SWEEP_MD, out / SWEEP_CSV]
    for field, effect in report["effects"].items():
        others = [f for f in fields if f != field]
        averaged = f"\n(averaged over {', '.join(others)})" if others and not one_at_a_time else ""
        title = f"Final evaluation reward against {field}" + averaged
        figure = figures.errorbar_figure(field, [_text(v) for v in effect["values"]], effect["mean"], effect["std"], title)
        files.append(figures.save(figure, out / f"sweep_{field}.png"))
    report["files"] = [str(path) for path in [*files, out / REPORT_JSON]]
    (out / REPORT_JSON).write_text(json.dumps(json_safe(report), indent=1) + "\n")
    return report


def sweep_markdown(report: dict) -> str:
    fields = ["change"] if report.get("one_at_a_time") else list(report["grid"])
    header = (*fields, "seeds", *STAT_HEADER)
    cells = [(*(_text(row[f]) for f in fields), f"{row['n']}/{row['seeds_total']}", *stat_cells(row))
             for row in report["rows"]]
    fixed = report.get("fixed") or {}
    settings = f"; every point with {point_name(fixed)}" if fixed else ""
    kind = ", one field at a time from the base" if report.get("one_at_a_time") else ""
    lines = [f"# Sweep: final evaluation reward, budget `{report['budget']}`{settings}{kind}, "
             f"seeds {seed_text(report['seeds'])}", "", markdown_table(header, cells), *notes(report)]
    return "\n".join(lines) + "\n"


def _text(value) -> str:
    """A grid value as directory names and tables show it; a list's entries joined by _ (no / in a name)."""
    if isinstance(value, (list, tuple)):
        return "_".join(map(str, value))
    return "none" if value is None else str(value)
