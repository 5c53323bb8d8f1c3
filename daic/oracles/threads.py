"""Run small numeric kernels on one thread.

The oracles' kernels (a few thousand kNN queries, boosted trees on a few thousand windows) are
too small to gain from OpenMP/BLAS threads, and on a machine whose cores are busy (the sidecar
sits next to the model server) spinning threads make them orders of magnitude slower. Building a
``threadpoolctl`` limiter scans the loaded libraries (~50 ms), so one controller is kept.
"""
from __future__ import annotations

import functools
from contextlib import AbstractContextManager


@functools.lru_cache(maxsize=1)
def _controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def single_thread() -> AbstractContextManager:
    """Context manager limiting OpenMP and BLAS pools to one thread."""
    return _controller().limit(limits=1)
