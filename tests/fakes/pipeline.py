"""A fast pipeline callable for local-runner tests: a real function run in a real subprocess.

It reports the stages the real assess-and-improve pipeline goes through and waits for the file
``params["release_file"]`` (created by the test) before "training", so a test decides exactly when
the run may finish - no timing guesses. It returns ``params["fake_result"]``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from daic.operators.runners.local_worker import report_stage


def run(params: dict[str, Any]) -> dict[str, Any]:
    report_stage("sample-operational")
    if params.get("started_file"):  # atomically, so a test polling for it never reads it half-written
        started = Path(params["started_file"])
        tmp = started.with_name(f".{started.name}.{os.getpid()}")
        tmp.write_text(str(os.getpid()))
        os.replace(tmp, started)
    report_stage("collect-labels")
    release = Path(params["release_file"])
    deadline = time.monotonic() + float(params.get("wait_timeout_s", 120))
    while not release.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} was not created in time")
        time.sleep(0.02)
    report_stage("train")
    report_stage("evaluate")
    # What a real run would write to: the store the controller passed down (DAIC_STORE).
    return {**params["fake_result"], "store_seen": os.environ.get("DAIC_STORE")}


def fail(params: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("labeling backend unreachable")


def not_a_dict(params: dict[str, Any]) -> list:
    return [1, 2, 3]
