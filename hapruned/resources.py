"""Refuse work that cannot fit in memory before anything is written or allocated.

Each command estimates the memory of its large parts (a few buffers dominate) and calls
:func:`check_memory`; an estimate above what the machine has available raises ``MemoryEstimateError``
naming the part, the flags it grows with and the limit, instead of a MemoryError half-way through (or
the kernel's OOM killer).
"""

from __future__ import annotations

import os
from pathlib import Path


class MemoryEstimateError(ValueError):
    """A run would need more memory than the machine has."""


def available_memory() -> int:
    """Bytes of memory a new allocation may take: the least of what the machine has available (Linux's
    MemAvailable, else the physical memory), the room left under this process's address-space and data
    limits (``ulimit -v``, ``ulimit -d``) and the room left under its cgroup's memory limit (a container's
    or a systemd slice's)."""
    return min([_machine_available(), *_rlimit_room(), *_cgroup_room()])


def _machine_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _rlimit_room() -> list[int]:
    """Each set soft limit of RLIMIT_AS and RLIMIT_DATA less what the process already maps (VmSize, VmData)."""
    try:
        import resource

        with open("/proc/self/status") as f:
            used = {key: int(rest.split()[0]) * 1024 for key, _, rest in (line.partition(":") for line in f)
                    if key in ("VmSize", "VmData")}
    except (ImportError, OSError):
        return []
    rooms = []
    for limit, key in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
        soft = resource.getrlimit(limit)[0]
        if soft != resource.RLIM_INFINITY and key in used:
            rooms.append(max(0, soft - used[key]))
    return rooms


def _cgroup_room(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> list[int]:
    """The room under each memory limit of this process's cgroup and its ancestors: the limit less the
    usage that cannot be reclaimed (the usage less the inactive file cache). cgroup v2: ``memory.max``
    and ``memory.current`` of every level; v1: ``memory.limit_in_bytes`` (and the ``hierarchical_memory_limit``
    of the ancestors) and ``memory.usage_in_bytes``."""
    try:
        with open(proc_cgroup) as f:
            entries = [line.rstrip("\n").split(":", 2) for line in f]
    except OSError:
        return []
    rooms = []
    for _, controllers, path in (e for e in entries if len(e) == 3):
        if controllers == "":  # v2: the unified hierarchy
            level = Path(root, path.lstrip("/"))
            while True:
                limit = _read_int(level / "memory.max")
                if limit is not None:
                    rooms.append(_room(limit, _read_int(level / "memory.current"), level, "inactive_file"))
                if level == Path(root) or not level.is_relative_to(root):
                    break
                level = level.parent
        elif "memory" in controllers.split(","):  # v1; without a cgroup namespace the container's is the root
            level = Path(root, "memory", path.lstrip("/"))
            level = level if level.is_dir() else Path(root, "memory")
            limits = [_read_int(level / "memory.limit_in_bytes"), _stat(level, "hierarchical_memory_limit")]
            limits = [limit for limit in limits if limit is not None]
            if limits:
                rooms.append(_room(min(limits), _read_int(level / "memory.usage_in_bytes"), level, "total_inactive_file"))
    return rooms


def _room(limit: int, usage: int | None, level: Path, inactive: str) -> int:
    return max(0, limit - max(0, (usage or 0) - (_stat(level, inactive) or 0)))


def _read_int(path: Path) -> int | None:
    """The integer a cgroup file holds; None for ``max`` (no limit) or a file that is missing or unreadable."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat(level: Path, key: str) -> int | None:
    """``key``'s value in the cgroup's ``memory.stat``."""
    try:
        for line in (level / "memory.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return None


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
