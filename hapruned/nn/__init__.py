"""Grouped modules built on ``hapruned.ops``."""

from hapruned.nn.grouped import GroupedLinear, GroupedLSTM

__all__ = ["GroupedLSTM", "GroupedLinear"]
