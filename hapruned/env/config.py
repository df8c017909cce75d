"""Configuration of the DSA environment (paper Section II; rules fixed in docs/design.md §1)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Sequence, Union

import numpy as np

from hapruned.validation import check_bool, check_integer, check_number, is_number

PuProb = Union[float, Sequence[float]]

# The paper's two setups: A without primary users, B with each channel busy w.p. 0.2.
SETUPS = {"A": {}, "B": {"pu_prob": 0.2}}


def _parse_pu_prob(text: str) -> PuProb:
    """``"0.2"`` -> 0.2 (every channel), ``"0.1,0.2,0.3"`` -> one probability per channel."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"pu_prob must be a probability or comma-separated probabilities (e.g. 0.2 or 0.1,0.2), got {text!r}"
        ) from None
    return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True)
class DSAConfig:
    """N users sharing K channels for episodes of ``horizon`` slots.

    Actions are ``0`` (idle) or a channel ``1..K``. Feedback is ``0`` idle, ``1`` ACK (the only
    user on a free channel), ``-1`` NACK (two or more users on it), ``-2`` primary user present.
    With ``observe_snr`` a user also observes the SNR of its last transmission (docs/design.md §1).
    """

    n_users: int = field(default=10, metadata={"help": "number of secondary users (agents) N, >= 1"})
    n_channels: int = field(default=5, metadata={"help": "number of orthogonal channels K, >= 1"})
    horizon: int = field(default=100, metadata={"help": "slots per episode T, >= 1"})
    snr_low: float = field(default=30.0, metadata={"help": "lower bound of the uniform linear SNR, > 0"})
    snr_high: float = field(default=40.0, metadata={"help": "upper bound of the uniform linear SNR, >= snr_low"})
    pu_prob: PuProb = field(
        default=0.0,
        metadata={
            "help": "probability that a primary user occupies a channel in a slot: one value for "
            "all channels or K comma-separated values, each in [0, 1]",
            "parse": _parse_pu_prob,
        },
    )
    observe_snr: bool = field(
        default=False,
        metadata={"help": "each user also observes the SNR of its last transmission on a channel free of primary "
                  "users, collided or not; its networks read it scaled from [snr_low, snr_high] to [0, 1]"},
    )

    def __post_init__(self):
        for name in ("n_users", "n_channels", "horizon"):
            object.__setattr__(self, name, check_integer(getattr(self, name), f"DSAConfig.{name}", 1))
        object.__setattr__(self, "snr_low", check_number(self.snr_low, "DSAConfig.snr_low", 0, low_open=True))
        if not (is_number(self.snr_high) and self.snr_high >= self.snr_low):
            raise ValueError(
                f"DSAConfig.snr_high must be finite and >= snr_low={self.snr_low}, got {self.snr_high!r}"
            )
        object.__setattr__(self, "snr_high", float(self.snr_high))
        object.__setattr__(self, "observe_snr", check_bool(self.observe_snr, "DSAConfig.observe_snr"))
        try:
            probs = np.asarray(self.pu_prob, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"DSAConfig.pu_prob must be a float or a sequence of n_channels floats, got {self.pu_prob!r}"
            ) from None
        if probs.ndim > 1 or (probs.ndim == 1 and probs.shape[0] != self.n_channels):
            raise ValueError(
                f"DSAConfig.pu_prob must be one value or n_channels={self.n_channels} values, got {self.pu_prob!r}"
            )
        if not np.all((probs >= 0) & (probs <= 1)):
            raise ValueError(f"DSAConfig.pu_prob values must lie in [0, 1], got {self.pu_prob!r}")
        # stored as a float or a tuple of floats, so configs compare, hash and print plainly
        object.__setattr__(self, "pu_prob", float(probs) if probs.ndim == 0 else tuple(probs.tolist()))

    @property
    def pu_probs(self) -> np.ndarray:
        """Primary-user occupancy probability per channel, shape ``[K]``."""
        return np.broadcast_to(np.asarray(self.pu_prob, dtype=np.float64), (self.n_channels,)).copy()

    @property
    def n_actions(self) -> int:
        """K + 1: idle plus one action per channel."""
        return self.n_channels + 1

    @classmethod
    def setup(cls, name: str, **overrides) -> "DSAConfig":
        """The paper's setups: ``"A"`` (no primary users) or ``"B"`` (each channel busy w.p. 0.2)."""
        if name not in SETUPS:
            raise ValueError(f"setup must be one of {', '.join(SETUPS)}, got {name!r}")
        return cls(**{**SETUPS[name], **overrides})

    def replace(self, **changes) -> "DSAConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The fields as plain JSON values (a per-channel ``pu_prob`` as a list)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(self).items()}
