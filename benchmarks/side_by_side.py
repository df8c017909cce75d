"""Several trainings at once against one alone: what sharing the machine costs each run.

    python benchmarks/side_by_side.py                      # 2 runs, default threads
    python benchmarks/side_by_side.py --runs 2 -- --threads 1
    python benchmarks/side_by_side.py -- --iterations 20   # train flags after --

Times ``python -m hapruned train --setup A --iterations 10 --envs-per-iteration 16 --seed 0`` alone,
then ``--runs`` copies started together (seeds 0, 1, ...), and prints each wall time and the ratio of
the slowest run together to the run alone (each run's share of the machine is 1 / runs of it, so
a ratio of `runs` is perfect sharing; the target for 2 runs is <= 2.5). Flags after ``--`` are added
to every run (a later flag overrides an earlier one). The machine must be otherwise quiet.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["--setup", "A", "--iterations", "10", "--envs-per-iteration", "16"]


def run_together(seeds, out: Path, extra: list[str]) -> list[float]:
    """Starts one training per seed at once; returns each one's wall time in seconds."""
    out.mkdir()
    processes, finished = [], {}
    started = time.perf_counter()
    try:
        for seed in seeds:
            command = [sys.executable, "-m", "hapruned", "train", *TRAIN, "--seed", str(seed),
                       "--out", str(out / f"seed-{seed}"), "--json", *extra]
            log = open(out / f"seed-{seed}.log", "w")
            processes.append((subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log), log))
        while len(finished) < len(processes):
            for k, (process, log) in enumerate(processes):
                if k not in finished and process.poll() is not None:
                    finished[k] = time.perf_counter() - started
                    if process.returncode:
                        raise SystemExit(f"a training run failed (exit {process.returncode}):\n{Path(log.name).read_text()}")
            time.sleep(0.02)
    finally:  # a failed or interrupted comparison stops the other runs too
        for process, log in processes:
            process.kill()
            process.wait()
            log.close()
    return [finished[k] for k in range(len(processes))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="trainings started together (default: 2)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("train_flags", nargs="*", help="flags added to every `hapruned train` (after --)")
    args = parser.parse_args()
    if args.runs < 2:
        parser.error(f"--runs must be >= 2, got {args.runs}")
    with tempfile.TemporaryDirectory() as tmp:
        (alone,) = run_together([0], Path(tmp) / "alone", args.train_flags)
        together = run_together(range(args.runs), Path(tmp) / "together", args.train_flags)
    result = {"runs": args.runs, "train_flags": TRAIN + args.train_flags, "alone_s": alone, "together_s": together,
              "ratio": max(together) / alone}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"one run alone: {alone:.1f} s; {args.runs} at once: " + ", ".join(f"{t:.1f} s" for t in together))
        print(f"slowest together / alone: {result['ratio']:.2f}x (perfect sharing: {args.runs}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
