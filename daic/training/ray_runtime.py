"""Starting and stopping Ray around one training run.

With ``RAY_ADDRESS`` set (or an explicit address) the run joins that cluster -- a remote one, or
the KubeRay cluster a ``RayJob`` entrypoint runs in -- and leaves it running. Without it a
private local Ray is started with just the CPUs the run needs, no dashboard and no usage-stats
reporting, and shut down when the run ends, even on error. If Ray is already initialised in this
process (a notebook, a test) it is used as is and left alone.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

# Quiet: no usage-stats prompt or upload (the dashboard is off via ray.init below).
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


@dataclass(frozen=True)
class RaySession:
    address: str  # "local" for a private instance
    started_here: bool
    start_s: float  # seconds spent in ray.init (Ray's fixed cost, kept apart from training time)


@contextmanager
def ray_session(num_cpus: Optional[int] = None, num_gpus: Optional[int] = None,
                address: Optional[str] = None, verbose: bool = False) -> Iterator[RaySession]:
    import ray

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        yield RaySession(address="existing", started_here=False, start_s=0.0)
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    log_level = logging.INFO if verbose else logging.WARNING
    start = time.perf_counter()
    if address:
        ray.init(address=address, logging_level=log_level, log_to_driver=verbose)
    else:
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, logging_level=log_level,
                 log_to_driver=verbose)
    elapsed = time.perf_counter() - start
    try:
        yield RaySession(address=address or "local", started_here=True, start_s=elapsed)
    finally:
        ray.shutdown()
