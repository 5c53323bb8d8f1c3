"""CPU affinity for the local stack's processes: on one machine, the closest thing to the CPU a
pod's resources give each container (benchmarks/serving_load.py --layout isolated)."""
from __future__ import annotations

import os
from collections.abc import Callable


def check_cpus(name: str, cpus: tuple[int, ...]) -> None:
    """``cpus`` must be a non-empty set of this machine's CPU numbers; ``name`` is the setting."""
    available = range(os.cpu_count() or 1)
    if not cpus or any(cpu not in available for cpu in cpus):
        raise ValueError(f"{name} must be a non-empty set of CPU numbers in 0..{available[-1]}, got {cpus}")


def pinned(cpus: tuple[int, ...] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins the child process (and what it forks) to ``cpus``; None: inherit."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)
