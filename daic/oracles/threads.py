"""Run small numeric kernels on one thread.

The oracles' kernels (a few thousand kNN queries, boosted trees on a few thousand windows) are
too small to gain from OpenMP/BLAS threads, and on a machine whose cores are busy (the sidecar
sits next to the model server) spinning threads make them orders of magnitude slower. Building a
``threadpoolctl`` limiter scans the loaded libraries (~50 ms), so one controller is kept; it sees
only the thread pools loaded when it is built, so the controller first loads the ones the oracles
use (scikit-learn's OpenMP runtime and BLAS through numpy/scipy; faiss's OpenMP where installed).
"""
from __future__ import annotations

import functools
from contextlib import AbstractContextManager


@functools.lru_cache(maxsize=1)
def _controller():
    import importlib
    import importlib.util

    from threadpoolctl import ThreadpoolController

    # scikit-learn's OpenMP runtime, BLAS/LAPACK, faiss's OpenMP: each where installed
    for module in ("sklearn.utils._openmp_helpers", "scipy.linalg", "faiss"):
        if importlib.util.find_spec(module.split(".")[0]) is not None:
            importlib.import_module(module)
    return ThreadpoolController()


def single_thread() -> AbstractContextManager:
    """Context manager limiting OpenMP and BLAS pools to one thread."""
    return _controller().limit(limits=1)
