"""The oracle's matching: the Hungarian algorithm (``hapruned.baselines.oracle``) against hapruned's first
oracle, the dynamic programme over channel subsets (``tests/oracle_reference.py``), in the same run.

    python -m pytest benchmarks/test_bench_oracle.py --benchmark-only -s

- ``paper``: one slot of 500 environments of setup B (N = 10 users, K = 5 channels, each busy w.p.
  0.2), what ``hapruned baselines`` and the held-out evaluations of the oracle run every slot.
- ``largest``: one matching at N = 40, K = 20, the scaling study's largest size (every channel free).
  The subset DP needs 40 · 2^20 bytes of choices and about 40 · 2^20 · 20 steps: one matching, timed
  once, is enough to show it cannot serve an evaluation of 100 episodes × 100 slots.

Both sides solve the same weight matrices (log2(1 + U[30, 40])) on one thread; each case records the
microseconds per matching in ``extra_info`` and prints the DP / Hungarian ratio of the fastest rounds.
"""

import numpy as np
import pytest

from hapruned.baselines.oracle import _match_batch
from oracle_reference import subset_dp_batch

CASES = {"paper": (500, 10, 5, 0.2), "largest": (1, 40, 20, 0.0)}  # environments, N, K, pu_prob
ROUNDS = {("paper", "hungarian"): 200, ("paper", "subset_dp"): 200, ("largest", "hungarian"): 20,
          ("largest", "subset_dp"): 1}

seconds = {}  # the fastest round of each (case, implementation) in this run


def problem(case):
    envs, n_users, n_channels, pu_prob = CASES[case]
    rng = np.random.default_rng(0)
    weight = np.log2(1 + rng.uniform(30, 40, size=(envs, n_users, n_channels)))
    busy = rng.random((envs, n_channels)) < pu_prob
    return weight, busy, np.zeros((envs, n_users), dtype=np.int64)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("implementation", ["subset_dp", "hungarian"])
def test_oracle_matching(benchmark, case, implementation):
    benchmark.group = f"oracle-{case}"
    weight, busy, actions = problem(case)
    values = np.zeros(len(weight))
    if implementation == "hungarian":
        run = lambda: _match_batch(weight, busy, actions, values)  # noqa: E731
    else:
        run = lambda: subset_dp_batch(weight, busy, actions)  # noqa: E731
    run()  # compile outside the timing
    rounds = ROUNDS[(case, implementation)]
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=1 if rounds > 1 else 0)
    if benchmark.stats is None:  # --benchmark-disable
        return
    seconds[(case, implementation)] = benchmark.stats.stats.min
    per_matching = 1e6 * benchmark.stats.stats.min / len(weight)
    benchmark.extra_info["us_per_matching"] = per_matching
    print(f"\n{case} {implementation}: {per_matching:.2f} us per matching")
    if implementation == "hungarian" and (case, "subset_dp") in seconds:
        ratio = seconds[(case, "subset_dp")] / seconds[(case, implementation)]
        benchmark.extra_info["speedup_vs_subset_dp"] = ratio
        print(f"{case}: the Hungarian algorithm is {ratio:.1f}x the subset DP")
