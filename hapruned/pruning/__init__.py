"""Sparsity schedules (paper Eqs. 10-14) and the magnitude pruner of the actors (docs/design.md §3)."""

from hapruned.pruning.figure import figure1_curves
from hapruned.pruning.pruner import MODES, Pruner
from hapruned.pruning.schedules import SCHEDULES, SparsitySchedule, make_schedule

__all__ = ["MODES", "SCHEDULES", "Pruner", "SparsitySchedule", "figure1_curves", "make_schedule"]
