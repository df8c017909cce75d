"""Grouped modules built on ``hapruned.ops``."""

from hapruned.nn.grouped import GroupedLinear, GroupedLSTM
from hapruned.nn.policy import sample_actions

__all__ = ["GroupedLSTM", "GroupedLinear", "sample_actions"]
