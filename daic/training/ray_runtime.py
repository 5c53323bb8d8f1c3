"""Starting Ray for training runs, and keeping it for the next one.

With ``RAY_ADDRESS`` set (or an explicit address) a run joins that cluster -- a remote one, or
the KubeRay cluster a ``RayJob`` entrypoint runs in -- and leaves it running. Without it a
private local Ray is started with the CPUs the run needs and the GPUs this machine has
(``torch.cuda.device_count()``: Ray is never told of GPUs that do not exist), no dashboard and
no usage-stats reporting. That local Ray is **kept for the next run in the same process** (the
embedded default's fixed cost, ``ray.init``, is then paid once); a run that needs more CPUs
restarts it larger, and Ray shuts it down when the process exits (or :func:`shutdown_local`).
If Ray was initialised in this process by someone else (a notebook, a test) it is used as is.
A local Ray started off the main thread is never kept: its processes die with that thread.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

# Quiet: no usage-stats prompt or upload (the dashboard is off via ray.init below).
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}
# For a private local Ray only (its processes inherit the driver's environment): Ray Train's
# controller polls its workers every 2 s by default, which adds up to 2 s at each end of every fit
# (start-up noticed late, the finished run noticed late); polling a local worker is cheap.
LOCAL_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}


class NotEnoughGPUs(ValueError):
    """More GPU workers were asked for than this machine has GPUs."""


@dataclass(frozen=True)
class RaySession:
    address: str  # "local" for a private instance
    started_here: bool  # this run paid ray.init
    start_s: float  # seconds spent in ray.init (Ray's fixed cost, kept apart from training time)
    reused: bool = False  # a local Ray kept from an earlier run in this process


@dataclass(frozen=True)
class LocalResources:
    cpus: int
    gpus: int


def local_resources(num_workers: int, cpus_per_worker: int, use_gpu: bool, gpus_present: int) -> LocalResources:
    """Pure rule: what a private local Ray is started with for a run.

    CPUs: exactly what the workers ask for. GPUs: the ones the machine has (0 on a CPU run, so
    no worker is ever placed on a GPU Ray only imagines). ``use_gpu`` with more workers than GPUs
    is an error naming both numbers: each Ray Train GPU worker takes one whole GPU.
    """
    if num_workers < 1 or cpus_per_worker < 1:
        raise ValueError(f"need >= 1 worker and >= 1 CPU per worker, got {num_workers} x {cpus_per_worker}")
    if gpus_present < 0:
        raise ValueError(f"GPU count cannot be negative, got {gpus_present}")
    if not use_gpu:
        return LocalResources(num_workers * cpus_per_worker, 0)
    if gpus_present == 0:
        raise NotEnoughGPUs(f"use_gpu asks for {num_workers} GPU worker(s) but this machine has no GPU "
                            "(torch.cuda.device_count() == 0); train on CPU or join a GPU cluster (RAY_ADDRESS)")
    if num_workers > gpus_present:
        raise NotEnoughGPUs(f"{num_workers} GPU workers asked for but this machine has {gpus_present} GPU(s): "
                            f"use --num-workers {gpus_present} or fewer (one GPU per Ray Train worker)")
    return LocalResources(num_workers * cpus_per_worker, gpus_present)


def gpus_present() -> int:
    """GPUs this process can see (``CUDA_VISIBLE_DEVICES`` respected); 0 without CUDA."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@dataclass
class _Kept:
    resources: LocalResources


_kept: Optional[_Kept] = None


def kept_local() -> Optional[LocalResources]:
    """The resources of the local Ray kept for the next run, if one is running."""
    import ray

    if _kept is not None and ray.is_initialized():
        return _kept.resources
    return None


def shutdown_local() -> None:
    """Stop the kept local Ray (a no-op when none is kept)."""
    global _kept
    import ray

    if _kept is not None:
        _kept = None
        if ray.is_initialized():
            ray.shutdown()


@contextmanager
def ray_session(resources: Optional[LocalResources] = None, address: Optional[str] = None,
                verbose: bool = False, keep: bool = True) -> Iterator[RaySession]:
    """Ray for one run: join ``address`` / ``RAY_ADDRESS``, or a private local Ray sized by
    ``resources`` -- kept for later runs (``keep``) or shut down when the run ends, even on error."""
    global _kept
    import ray

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    address = address or os.environ.get("RAY_ADDRESS") or None
    log_level = logging.INFO if verbose else logging.WARNING
    if ray.is_initialized():
        kept = _kept.resources if _kept is not None else None
        if kept is None:  # someone else's Ray: use it as is
            yield RaySession(address="existing", started_here=False, start_s=0.0)
            return
        if address is None and resources is not None and kept.cpus >= resources.cpus and kept.gpus >= resources.gpus:
            yield RaySession(address="local", started_here=False, start_s=0.0, reused=True)
            return
        shutdown_local()  # too small, or a cluster is wanted now
    start = time.perf_counter()
    if address:
        ray.init(address=address, logging_level=log_level, log_to_driver=verbose)
    else:
        resources = resources or LocalResources(os.cpu_count() or 1, 0)
        for key, value in LOCAL_ENV.items():
            os.environ.setdefault(key, value)
        ray.init(num_cpus=resources.cpus, num_gpus=resources.gpus, include_dashboard=False,
                 logging_level=log_level, log_to_driver=verbose)
    elapsed = time.perf_counter() - start
    # Ray starts its local processes (GCS, raylet) with PR_SET_PDEATHSIG=SIGKILL, which Linux fires
    # when the *thread* that spawned them exits: a Ray started off the main thread (a CLI run in a
    # worker thread, a test driving the demo from one) would be killed under the process when that
    # thread ends, and Ray then exits the process once the GCS stays unreachable. Keep only a Ray
    # the main thread started; one started elsewhere is shut down with its run.
    kept_now = keep and not address and threading.current_thread() is threading.main_thread()
    if kept_now:
        _kept = _Kept(resources)
        atexit.register(shutdown_local)
    try:
        yield RaySession(address=address or "local", started_here=True, start_s=elapsed)
    finally:
        if not kept_now:
            ray.shutdown()
