#!/usr/bin/env python3
"""Shows that the emulated CUDA tests can fail: injects bugs into the CUDA kernels, one at a time, and
checks that the tests on the emulated CUDA device catch each (docs/cuda.md).

    tools/inject_faults.py                 every fault
    tools/inject_faults.py --faults 1,4    some of them

Builds hapruned._C_emu once with HAPRUNED_FAULT_INJECTION (the kernels' HAPRUNED_FAULT(n) hooks, which
every other build compiles to `false`) into a temporary copy of the package and the tests, then runs
the emulated tests (`pytest -m emulated`) there without a fault (they must pass) and with each fault
(HAPRUNED_FAULT=n), and prints which tests failed. Exits 1 if the run without a fault fails or a fault
that must be caught is not. Takes a few minutes per fault on two cores; needs hapruned._C built in place.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# n -> (kernel, the bug, whether the emulated tests must catch it)
FAULTS = {
    1: ("radix pass", "no barrier between zeroing the block's histogram and counting into it", True),
    2: ("radix pass", "the block of a group's last slice resolves the digit, not the last block to arrive", True),
    3: ("tie count", "off by one: each slice's last key is not counted", True),
    4: ("prune mask", "no barrier between the warps' tie counts and their sums", True),
    5: ("LSTM forward gates", "off by one: the last unit is skipped", True),
    6: ("LSTM backward gates", "off by one: the grid-stride loop starts one unit late", True),
    7: ("radix pass", "no __threadfence before a block counts itself as arrived", False),
}


def build(out: Path) -> Path:
    """hapruned._C_emu with the fault hooks, built in `out`; returns the library."""
    from torch.utils.cpp_extension import load

    out.mkdir()
    load(name="_C_emu", sources=[str(path) for path in sorted((REPO / "csrc" / "emu").glob("*.cpp"))],
         extra_cflags=["-std=c++20", "-O2", "-Wno-unknown-pragmas", "-DHAPRUNED_FAULT_INJECTION"],
         build_directory=str(out), is_python_module=False, verbose=False)
    return out / "_C_emu.so"


def overlay(root: Path, library: Path) -> None:
    """A copy of the package (its built hapruned._C included) with the faulty _C_emu, and the tests."""
    shutil.copytree(REPO / "hapruned", root / "hapruned", ignore=shutil.ignore_patterns("_C_emu*", "__pycache__"))
    shutil.copytree(REPO / "tests", root / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root)
    shutil.copy(library, root / "hapruned" / library.name)


def run_tests(root: Path, fault: int, timeout: int) -> tuple[int, list[str], str]:
    """(pytest's exit status, the failed tests with pytest's reason, the summary line) of the emulated
    tests with `fault`."""
    env = {**os.environ, "HAPRUNED_FAULT": str(fault), "PYTHONPATH": str(root), "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "pytest", "tests", "-m", "emulated", "-q", "-p", "no:cacheprovider",
                             "-rfE", "--no-header", "--tb=no"], cwd=root, env=env, capture_output=True, text=True,
                            timeout=timeout)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+.*)$", result.stdout, re.MULTILINE)
    lines = result.stdout.strip().splitlines()
    return result.returncode, failed, lines[-1] if lines else result.stderr.strip()[-300:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", default=",".join(map(str, FAULTS)),
                        help=f"comma-separated fault numbers among {', '.join(map(str, FAULTS))} (default: all)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per test run (default 1800)")
    args = parser.parse_args()
    try:
        faults = [int(n) for n in args.faults.split(",")]
    except ValueError:
        parser.error(f"--faults must be comma-separated integers, got {args.faults!r}")
    if unknown := [n for n in faults if n not in FAULTS]:
        parser.error(f"--faults: unknown fault(s) {unknown}; the faults are {', '.join(map(str, FAULTS))}")
    if not list((REPO / "hapruned").glob("_C.*so")):
        parser.error("build hapruned._C in place first: python setup.py build_ext --inplace")

    with tempfile.TemporaryDirectory(prefix="hapruned-faults-") as tmp:
        root = Path(tmp)
        print("building hapruned._C_emu with the fault hooks ...", flush=True)
        overlay(root, build(root / "build"))
        status, failed, summary = run_tests(root, 0, args.timeout)
        print(f"no fault: {summary}", flush=True)
        if status != 0:
            print("the emulated tests fail without a fault:" + "".join(f"\n  {test}" for test in failed))
            return 1
        ok = True
        rows = []
        for n in faults:
            kernel, bug, must_catch = FAULTS[n]
            status, failed, summary = run_tests(root, n, args.timeout)
            caught = status != 0
            ok &= caught or not must_catch
            verdict = ("caught" if caught else "NOT CAUGHT") if must_catch else ("caught" if caught else "not caught (expected)")
            rows.append((n, kernel, bug, verdict, failed))
            print(f"fault {n}: {verdict}: {summary}", flush=True)
    print("\nfault  kernel               bug")
    for n, kernel, bug, verdict, failed in rows:
        print(f"{n:>5}  {kernel:<20} {bug}\n       {verdict}; {len(failed)} failed" + "".join(f"\n         {t}" for t in failed))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
