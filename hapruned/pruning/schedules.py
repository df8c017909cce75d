"""Sparsity schedules of the paper (Eqs. 10-14), with the LR-scheduler contract.

Iteration indexing. Training iterations are numbered ``i = 1..I_T``. A schedule is built "before
training" with ``last_iteration = 0``; the call to ``step()`` made after iteration ``i``'s update
makes ``last_iteration = i``, and ``get_last_sparsity()`` then returns ``sparsity_at(i)``, the
sparsity a prune event after iteration ``i`` uses. ``sparsity_at`` is a pure function of ``i``:

- ``i < i_start``: 0 (Eq. 10);
- ``i_start <= i < i_end``: the schedule's formula below;
- ``i >= i_end``: ``p_final`` (``i_end`` is the paper's ``i_P``, the iteration at which the target
  is reached; pass the last training iteration to reach it at the end, as in the paper).

With ``s = (i - i_start) / (i_end - i_start)``:

- ``linear``:     ``p = p0 + (p_final - p0) * s``                  (Eqs. 10-11; the paper has p0 = 0)
- ``polynomial``: ``p = p0 + (p_final - p0) * (1 - (1 - s)**power)`` (power 3 in the paper; Zhu & Gupta)
- ``harmonic``:   ``p = min(max(b + c, p0), p_final)`` with ``c = amplitude * sin(2*pi*i / period)``
  (absolute ``i``, Eq. 13) and ``b = p_final + (p0 - p_final) * (1 + cos(pi * s)) / 2`` (Eq. 14)
- ``cosine``:     ``harmonic`` with ``amplitude = 0``, i.e. ``p = b`` (the ablation without the sine)
- ``constant``:   ``p = p_final`` from ``i_start`` on
- ``dense``:      ``p = 0`` always; its target is 0 whatever ``p_final`` is given.

``p_final`` and ``p0`` are per group (agent): a float or a sequence of length ``groups``.
"""

import math

import torch

from hapruned.validation import check_integer, check_number

SCHEDULES = ("linear", "polynomial", "harmonic", "cosine", "constant", "dense")


def _per_group(value, groups: int, argument: str) -> torch.Tensor:
    """A float or a length-``groups`` sequence in [0, 1] -> float64 tensor [groups]."""
    p = torch.as_tensor(value, dtype=torch.float64).detach().cpu().clone()
    if p.ndim == 0:
        p = p.expand(groups).clone()
    if p.shape != (groups,):
        raise ValueError(f"{argument} must be a float or a sequence of {groups} per-agent values, got shape {tuple(p.shape)}")
    if not bool(((p >= 0) & (p <= 1)).all()):
        raise ValueError(f"{argument} must lie in [0, 1], got {p.tolist()}")
    return p


class SparsitySchedule:
    """Base class: per-group sparsity as a function of the iteration, stepped like an LR scheduler.

    Subclasses implement ``_ramp(i, s)``: the sparsity [groups] for ``i_start <= i < i_end`` where
    ``s = (i - i_start) / (i_end - i_start)`` lies in [0, 1).
    """

    name = ""

    def __init__(self, p_final, *, groups: int, i_end: int, i_start: int = 0, p0=0.0):
        self.groups = check_integer(groups, "groups", 1)
        self.i_start = check_integer(i_start, "i_start", 0)
        self.i_end = check_integer(i_end, "i_end", 1)
        if self.i_end <= self.i_start:
            raise ValueError(f"i_end (the iteration at which p_final is reached) must be > i_start={i_start}, got {i_end}")
        self.p_final = _per_group(p_final, groups, "p_final")
        self.p0 = _per_group(p0, groups, "p0")
        if bool((self.p0 > self.p_final).any()):
            raise ValueError(f"p0 must not exceed p_final, got p0={self.p0.tolist()} and p_final={self.p_final.tolist()}")
        self.last_iteration = 0

    def _ramp(self, i: int, s: float) -> torch.Tensor:
        raise NotImplementedError

    def sparsity_at(self, i: int) -> torch.Tensor:
        """Sparsity [groups] (float64) of iteration ``i``; a pure function of ``i``."""
        if i < self.i_start:
            return torch.zeros(self.groups, dtype=torch.float64)
        if i >= self.i_end:
            return self.p_final.clone()
        return self._ramp(i, (i - self.i_start) / (self.i_end - self.i_start))

    def step(self) -> None:
        """Advance one iteration (call once after each training iteration's update)."""
        self.last_iteration += 1

    def get_last_sparsity(self) -> torch.Tensor:
        """Sparsity [groups] (float64) of the last iteration stepped to."""
        return self.sparsity_at(self.last_iteration)

    def state_dict(self) -> dict:
        """Plain Python values (JSON-friendly): the name, every hyperparameter and ``last_iteration``."""
        return {key: value.tolist() if isinstance(value, torch.Tensor) else value for key, value in vars(self).items()} | {
            "name": self.name
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") != self.name or state.get("groups") != self.groups:
            raise ValueError(
                f"state is of a {state.get('name')!r} schedule with {state.get('groups')} groups, "
                f"this is a {self.name!r} schedule with {self.groups}"
            )
        for key, value in state.items():
            if key == "name":
                continue
            if key not in vars(self):
                raise ValueError(f"unknown key {key!r} in a {self.name!r} schedule state")
            setattr(self, key, torch.tensor(value, dtype=torch.float64) if key in ("p_final", "p0") else value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, groups={self.groups}, i_start={self.i_start}, i_end={self.i_end}, last_iteration={self.last_iteration})"


class LinearSchedule(SparsitySchedule):
    name = "linear"

    def _ramp(self, i, s):
        return self.p0 + (self.p_final - self.p0) * s


class PolynomialSchedule(SparsitySchedule):
    name = "polynomial"

    def __init__(self, p_final, *, power: float = 3, **kwargs):
        super().__init__(p_final, **kwargs)
        self.power = check_number(power, "power", 0, low_open=True)

    def _ramp(self, i, s):
        return self.p0 + (self.p_final - self.p0) * (1.0 - (1.0 - s) ** self.power)


class HarmonicSchedule(SparsitySchedule):
    """Harmonic annealing (Eqs. 12-14); with ``amplitude = 0`` it is the plain cosine schedule."""

    name = "harmonic"

    def __init__(self, p_final, *, amplitude: float = 0.1, period: float = 200, name: str = "harmonic", **kwargs):
        super().__init__(p_final, **kwargs)
        self.amplitude = check_number(amplitude, "amplitude", 0)
        self.period, self.name = check_number(period, "period", 0, low_open=True), name

    def _ramp(self, i, s):
        b = self.p_final + 0.5 * (self.p0 - self.p_final) * (1.0 + math.cos(math.pi * s))
        c = self.amplitude * math.sin(2.0 * math.pi * i / self.period)
        return torch.minimum(torch.maximum(b + c, self.p0), self.p_final)


class ConstantSchedule(SparsitySchedule):
    name = "constant"

    def _ramp(self, i, s):
        return self.p_final.clone()


class DenseSchedule(SparsitySchedule):
    """Sparsity 0 throughout (the dense baseline); ``p_final`` and ``p0`` are taken as 0."""

    name = "dense"

    def __init__(self, p_final=0.0, *, groups: int, i_end: int, i_start: int = 0, p0=0.0):
        super().__init__(0.0, groups=groups, i_end=i_end, i_start=i_start, p0=0.0)

    def _ramp(self, i, s):
        return torch.zeros(self.groups, dtype=torch.float64)


def make_schedule(
    name: str,
    p_final,
    *,
    groups: int,
    i_end: int,
    i_start: int = 0,
    p0=0.0,
    amplitude: float = 0.1,
    period: float = 200,
    power: float = 3,
) -> SparsitySchedule:
    """Build the schedule ``name`` (one of ``SCHEDULES``); arguments a schedule does not use are ignored.

    p_final, p0: float or sequence of ``groups`` per-agent values in [0, 1], ``p0 <= p_final``.
    i_end: the iteration ``i_P`` from which ``p_final`` holds (> i_start); usually the last iteration.
    amplitude, period: harmonic oscillation ``amplitude * sin(2 pi i / period)``; power: polynomial degree.
    """
    common = {"groups": groups, "i_end": i_end, "i_start": i_start, "p0": p0}
    if name == "linear":
        return LinearSchedule(p_final, **common)
    if name == "polynomial":
        return PolynomialSchedule(p_final, power=power, **common)
    if name == "harmonic":
        return HarmonicSchedule(p_final, amplitude=amplitude, period=period, **common)
    if name == "cosine":
        return HarmonicSchedule(p_final, amplitude=0.0, period=period, name="cosine", **common)
    if name == "constant":
        return ConstantSchedule(p_final, **common)
    if name == "dense":
        return DenseSchedule(p_final, **common)
    raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
