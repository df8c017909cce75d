"""tools/gpu_check.sh on a machine without a GPU: its dry run and its argument handling, so that the
script works on the day a GPU comes."""

from pathlib import Path

import pytest
import torch

import hapruned

import processes

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "gpu_check.sh"
STEPS = ["environment", "build", "cuda-tests", "gpu-benchmarks", "training"]


def run(*args, timeout=300):
    return processes.run([str(SCRIPT), *args], timeout=timeout)


def table(stdout):
    """step -> (status, details) from the summary table (columns as the script's printf writes them)."""
    rows = {}
    for line in stdout.splitlines():
        if line[:15].strip() in STEPS:
            rows[line[:15].strip()] = (line[16:24].strip(), line[34:])
    return rows


@pytest.mark.skipif(not hapruned.HAS_EXTENSION, reason="the dry run needs the compiled extension")
def test_dry_run_runs_every_step_without_a_gpu(tmp_path):
    result = run("--dry-run", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = table(result.stdout)
    assert list(rows) == STEPS
    assert all(status == "dry run" for status, _ in rows.values()), result.stdout
    assert int(rows["cuda-tests"][1].split()[2]) > 0  # "dry run: N cuda tests collected"
    assert int(rows["gpu-benchmarks"][1].split()[2]) > 0
    assert (tmp_path / "train" / "summary.json").exists() and (tmp_path / "training.log").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine this would run the whole check")
def test_without_a_gpu_the_check_fails_at_once(tmp_path):
    result = run("--out", str(tmp_path), timeout=120)
    assert result.returncode == 1
    rows = table(result.stdout)
    assert rows["environment"][0] == "FAIL" and "--dry-run" in rows["environment"][1]
    assert all(rows[name][0] == "not run" for name in STEPS[1:])


@pytest.mark.parametrize("args, message", [(["--bogus"], "unknown argument --bogus"), (["--out"], "--out needs a directory"),
                                           (["--out", "--dry-run"], "--out needs a directory")])
def test_bad_arguments_exit_2_naming_the_flag(args, message):
    result = run(*args, timeout=60)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_help_describes_the_options():
    result = run("--help", timeout=60)
    assert result.returncode == 0
    for option in ("--dry-run", "--out DIR", "--skip-build"):
        assert option in result.stdout
