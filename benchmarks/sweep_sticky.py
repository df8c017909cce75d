"""Grid sweep of the sticky access scheme's parameters on setups A and B (paper config).

Run from the source tree: ``python benchmarks/sweep_sticky.py [--episodes 500] [--seed 0] [--top 10]``.
Prints the best points ranked by the mean of the two setups' mean episode rewards; the result
chose the defaults of ``hapruned.baselines.StickyAccess`` (recorded in its docstring).
"""

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hapruned.baselines import StickyAccess, evaluate  # noqa: E402
from hapruned.env import DSAConfig  # noqa: E402

GRID = {
    "release_nack": (0.0, 0.02, 0.1, 0.5),
    "probe_start": (0.25, 0.5, 1.0),
    "backoff": (0.25, 0.5, 0.8),
    "probe_min": (0.0, 0.01),
    "release_pu": (0.0, 0.5),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    setups = {name: DSAConfig.setup(name) for name in ("A", "B")}
    rows = []
    for values in itertools.product(*GRID.values()):
        params = dict(zip(GRID, values))
        score = {name: evaluate(StickyAccess(**params), cfg, args.episodes, args.seed).mean() for name, cfg in setups.items()}
        rows.append(((score["A"] + score["B"]) / 2, score["A"], score["B"], params))
    rows.sort(key=lambda row: -row[0])
    names = list(GRID)
    print(" ".join(f"{name:>12}" for name in names) + f" {'A':>8} {'B':>8} {'mean':>8}")
    for mean, a, b, params in rows[: args.top]:
        print(" ".join(f"{params[name]:>12g}" for name in names) + f" {a:8.1f} {b:8.1f} {mean:8.1f}")


if __name__ == "__main__":
    main()
