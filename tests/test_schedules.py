"""Sparsity schedules against hand-computed values of the paper's Eqs. 10-14 and the Fig. 1 shape."""

import math

import numpy as np
import pytest
import torch

from hapruned.pruning import SCHEDULES, figure1_curves, make_schedule


def at(schedule, i):
    return schedule.sparsity_at(i).tolist()


def test_linear_hand_values():
    s = make_schedule("linear", 0.8, groups=1, i_start=10, i_end=30)
    assert at(s, 0) == [0.0] and at(s, 9) == [0.0]  # i < i_start: 0 (Eq. 10)
    assert at(s, 10) == pytest.approx([0.0], abs=1e-15)
    assert at(s, 15) == pytest.approx([0.8 * 5 / 20], abs=1e-15)
    assert at(s, 29) == pytest.approx([0.8 * 19 / 20], abs=1e-15)
    assert at(s, 30) == [pytest.approx(0.8)] and at(s, 500) == [pytest.approx(0.8)]  # i >= i_P


def test_polynomial_hand_values():
    s = make_schedule("polynomial", 0.9, groups=1, i_start=200, i_end=1000)
    assert at(s, 199) == [0.0]
    for i in (200, 300, 600, 999):
        assert at(s, i) == pytest.approx([0.9 * (1 - (1 - (i - 200) / 800) ** 3)], abs=1e-14)
    assert at(s, 1000) == [pytest.approx(0.9)]


def test_linear_and_polynomial_start_from_p0():
    lin = make_schedule("linear", 0.9, groups=1, i_end=100, p0=0.3)
    poly = make_schedule("polynomial", 0.9, groups=1, i_end=100, p0=0.3, power=2)
    assert at(lin, 25) == pytest.approx([0.3 + 0.6 * 0.25], abs=1e-15)
    assert at(poly, 25) == pytest.approx([0.3 + 0.6 * (1 - 0.75**2)], abs=1e-15)


def harmonic_by_hand(i, p_final, p0, i_start, i_end, a=0.1, period=200):
    b = p_final + 0.5 * (p0 - p_final) * (1 + math.cos(math.pi * (i - i_start) / (i_end - i_start)))
    c = a * math.sin(2 * math.pi * i / period)
    return min(max(b + c, p0), p_final)


def test_harmonic_hand_values_and_clamps():
    s = make_schedule("harmonic", 0.95, groups=1, i_end=1000)
    for i in (1, 37, 50, 120, 410, 700, 951, 999):
        assert at(s, i) == pytest.approx([harmonic_by_hand(i, 0.95, 0.0, 0, 1000)], abs=1e-14)
    # i = 150: sin = -1 and b = 0.95 * (1 - cos(0.15 pi)) / 2 < 0.1, so the clamp to p0 = 0 holds.
    assert at(s, 150) == [0.0]
    # i = 850: sin(8.5 pi) = 1 and b > 0.85, so the clamp to p_final holds.
    assert at(s, 850) == [pytest.approx(0.95)]
    # Eq. 13 uses the absolute iteration: i_start = 210 shifts b, not the phase of c.
    t = make_schedule("harmonic", 0.6, groups=1, i_start=210, i_end=610, p0=0.1, amplitude=0.05, period=40)
    assert at(t, 209) == [0.0]
    for i in (210, 211, 333, 609):
        assert at(t, i) == pytest.approx([harmonic_by_hand(i, 0.6, 0.1, 210, 610, 0.05, 40)], abs=1e-14)
    assert at(t, 230) == [pytest.approx(0.1)]  # sin(2 pi 230 / 40) = -1, b ~ 0.103 -> clamp to p0
    assert at(t, 610) == [pytest.approx(0.6)]


def test_cosine_is_harmonic_without_sine_and_constant_and_dense():
    cos = make_schedule("cosine", 0.9, groups=1, i_end=400, amplitude=0.3)
    for i in (0, 50, 200, 399):
        assert at(cos, i) == pytest.approx([harmonic_by_hand(i, 0.9, 0.0, 0, 400, a=0.0)], abs=1e-15)
    const = make_schedule("constant", 0.7, groups=1, i_start=5, i_end=10)
    assert [at(const, i)[0] for i in (4, 5, 7, 10, 99)] == [0.0] + [pytest.approx(0.7)] * 4
    dense = make_schedule("dense", 0.95, groups=2, i_end=10)
    assert all(at(dense, i) == [0.0, 0.0] for i in range(0, 15)) and dense.p_final.tolist() == [0.0, 0.0]


def test_per_agent_targets():
    s = make_schedule("harmonic", [0.95, 0.5, 0.0], groups=3, i_end=100, p0=[0.1, 0.0, 0.0])
    got = s.sparsity_at(37)
    assert got.dtype == torch.float64 and got.shape == (3,)
    want = [harmonic_by_hand(37, pf, p0, 0, 100) for pf, p0 in ((0.95, 0.1), (0.5, 0.0), (0.0, 0.0))]
    assert got.tolist() == pytest.approx(want, abs=1e-14)
    assert s.sparsity_at(100).tolist() == pytest.approx([0.95, 0.5, 0.0])


@pytest.mark.parametrize("name", SCHEDULES)
def test_step_contract_and_state_dict_round_trip(name):
    s = make_schedule(name, [0.9, 0.6], groups=2, i_start=3, i_end=40, period=10)
    assert s.last_iteration == 0 and torch.equal(s.get_last_sparsity(), s.sparsity_at(0))
    for _ in range(17):
        s.step()
    assert s.last_iteration == 17 and torch.equal(s.get_last_sparsity(), s.sparsity_at(17))
    state = s.state_dict()
    fresh = make_schedule(name, 0.1, groups=2, i_end=5)
    fresh.load_state_dict(state)
    assert fresh.last_iteration == 17
    for _ in range(30):
        s.step()
        fresh.step()
        assert torch.equal(fresh.get_last_sparsity(), s.get_last_sparsity())


def test_state_dict_of_another_schedule_is_rejected():
    with pytest.raises(ValueError, match="harmonic"):
        make_schedule("linear", 0.5, groups=1, i_end=5).load_state_dict(make_schedule("harmonic", 0.5, groups=1, i_end=5).state_dict())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "exponential"}, "linear, polynomial, harmonic, cosine, constant"),
        ({"p_final": 1.5}, "p_final must lie in"),
        ({"p_final": -0.1}, "p_final must lie in"),
        ({"p_final": [0.5, 0.5, 0.5]}, "p_final must be a float or a sequence of 2"),
        ({"i_end": 3, "i_start": 3}, "i_end"),
        ({"i_end": 2, "i_start": 3}, "i_end"),
        ({"i_start": -1}, "i_start"),
        ({"groups": 0}, "groups"),
        ({"p0": 0.9}, "p0 must not exceed p_final"),
        ({"name": "harmonic", "period": 0}, "period"),
        ({"name": "polynomial", "power": -1}, "power"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"name": "linear", "p_final": 0.5, "groups": 2, "i_end": 10} | kwargs
    name, p_final = args.pop("name"), args.pop("p_final")
    with pytest.raises(ValueError, match=match):
        make_schedule(name, p_final, **args)


def test_figure1_shape():
    curves = figure1_curves()
    iterations, lin, poly, harm = curves["iteration"], curves["linear"], curves["polynomial"], curves["harmonic"]
    assert iterations[0] == 1 and iterations[-1] == 1000 and len(lin) == len(poly) == len(harm) == 1000
    for curve in (lin, poly, harm):
        assert curve[-1] == pytest.approx(0.95) and curve.min() >= 0 and curve.max() <= 0.95 + 1e-12
    assert np.all(np.diff(lin) > 0) and np.all(np.diff(poly) >= 0)
    assert np.all(poly >= lin - 1e-12)  # the cubic prunes early
    # Harmonic oscillates: it falls (regrowth) in every period of 200, and sits at p0 = 0 early on.
    falls = np.diff(harm) < 0
    assert all(falls[start : start + 200].any() for start in range(0, 800, 200))
    assert (harm[100:200] == 0).any() and harm[:200].max() > 0.05
    # Its trend is the cosine: near the linear midpoint at 500, above linear late, below early.
    assert harm[499] == pytest.approx(0.475, abs=1e-12)
    assert harm[849] == pytest.approx(0.95)


def test_figure1_held_by_prune_events():
    held = figure1_curves(i_prune=5)["linear"]
    schedule = figure1_curves()["linear"]
    assert held[3] == 0.0 and held[4] == schedule[4] and held[8] == schedule[4] and held[-1] == pytest.approx(0.95)
