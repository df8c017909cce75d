"""The curves of the paper's Fig. 1: sparsity per iteration of the linear, polynomial and harmonic
schedules for I_T = 1000, p_final = 0.95 (i_start = 0, i_P = I_T, harmonic A = 0.1, P = 200)."""

import numpy as np

from hapruned.pruning.schedules import make_schedule

FIGURE1_SCHEDULES = ("linear", "polynomial", "harmonic")


def figure1_curves(
    total_iterations: int = 1000,
    p_final: float = 0.95,
    *,
    schedules=FIGURE1_SCHEDULES,
    i_start: int = 0,
    amplitude: float = 0.1,
    period: float = 200,
    power: float = 3,
    i_prune: int | None = None,
) -> dict[str, np.ndarray]:
    """Sparsity per iteration ``i = 1..total_iterations`` of each schedule, with ``i_P = total_iterations``.

    Returns {"iteration": int64 (I_T,), name: float64 (I_T,) for each name in ``schedules``}.
    i_prune: None plots the schedule itself; an integer plots what the actors hold, i.e. the value
    of the latest prune event (every ``i_prune`` iterations from ``i_start``, and ``p_final`` at the end).
    """
    iterations = np.arange(1, total_iterations + 1)
    curves = {"iteration": iterations}
    for name in schedules:
        schedule = make_schedule(
            name, p_final, groups=1, i_start=i_start, i_end=total_iterations,
            amplitude=amplitude, period=period, power=power,
        )
        values = np.array([float(schedule.sparsity_at(int(i))[0]) for i in iterations])
        if i_prune is not None:
            held, current = np.empty_like(values), 0.0
            for k, i in enumerate(iterations):
                if i == total_iterations:
                    current = p_final
                elif i >= i_start and (i - i_start) % i_prune == 0:
                    current = values[k]
                held[k] = current
            values = held
        curves[name] = values
    return curves
