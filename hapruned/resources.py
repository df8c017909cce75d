"""Refuse work that cannot fit in memory before anything is written or allocated.

Each command estimates the memory of its large parts (a few buffers dominate) and calls
:func:`check_memory`; an estimate above what the machine has available raises ``MemoryEstimateError``
naming the part, the flags it grows with and the limit, instead of a MemoryError half-way through.
"""

from __future__ import annotations

import os


class MemoryEstimateError(ValueError):
    """A run would need more memory than the machine has."""


def available_memory() -> int:
    """Bytes of memory available to a new allocation: Linux's MemAvailable, else the physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"


def check_memory(parts: dict[str, tuple[float, str]], available: int | None = None) -> None:
    """``parts``: name -> (estimated bytes, the flags it grows with). Raises MemoryEstimateError when
    their sum exceeds ``available`` (default: :func:`available_memory`), naming the largest part."""
    available = available_memory() if available is None else available
    total = sum(size for size, _ in parts.values())
    if total <= available:
        return
    name, (size, flags) = max(parts.items(), key=lambda item: item[1][0])
    raise MemoryEstimateError(
        f"this run needs about {_human(total)} of memory, more than the {_human(available)} available here; "
        f"the largest part, {name} ({_human(size)}), grows with {flags}: lower them"
    )
