"""Statistics over seeds: mean, sample standard deviation, Student-t 95% confidence interval, best seed."""

from __future__ import annotations

import math

import numpy as np

from hapruned.validation import check_integer, check_number


def t_cdf_two_sided(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` degrees of freedom, t >= 0 (the finite sums of
    Abramowitz & Stegun 26.7.3-4, exact up to rounding)."""
    theta = math.atan(t / math.sqrt(df))
    cos2, term, total = math.cos(theta) ** 2, 1.0, 1.0
    if df % 2:  # odd: 2/pi * (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        for k in range(1, (df - 1) // 2):
            term *= cos2 * (2 * k) / (2 * k + 1)
            total += term
        return 2 / math.pi * (theta + (math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0))
    # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
    for k in range(1, df // 2):
        term *= cos2 * (2 * k - 1) / (2 * k)
        total += term
    return math.sin(theta) * total


def t_quantile(probability: float, df: int) -> float:
    """The two-sided Student-t critical value: P(|T| <= t) = ``probability`` (0.95 -> 2.776 at df = 4)."""
    df = check_integer(df, "df", 1)
    check_number(probability, "probability", 0, 1, low_open=True, high_open=True)
    low, high = 0.0, 1.0
    while t_cdf_two_sided(high, int(df)) < probability:
        high *= 2
    for _ in range(200):  # bisection down to the float spacing
        mid = 0.5 * (low + high)
        if mid in (low, high):
            break
        low, high = (mid, high) if t_cdf_two_sided(mid, int(df)) < probability else (low, mid)
    return 0.5 * (low + high)


def summarize(values, seeds=None) -> dict:
    """n, mean, std (sample, ddof = 1), the 95% t confidence interval of the mean, and the best value
    with its seed (``seeds[i]`` names ``values[i]``). std and the interval are NaN below two values."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        nan = float("nan")
        return {"n": 0, "mean": nan, "std": nan, "ci95_low": nan, "ci95_high": nan, "best": nan, "best_seed": None}
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else float("nan")
    half = t_quantile(0.95, x.size - 1) * std / math.sqrt(x.size) if x.size > 1 else float("nan")
    best = int(np.argmax(x))
    return {
        "n": int(x.size), "mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half,
        "best": float(x[best]), "best_seed": None if seeds is None else int(seeds[best]),
    }
