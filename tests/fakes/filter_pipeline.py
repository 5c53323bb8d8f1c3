"""A fast pipeline callable with the fit-filter step's effect (issue 21), for local-controller tests.

Like fakes/pipeline.py, a real function in a real worker process: it writes the fit-filter
record ``cycles/<cycle>/filter.json`` (``params["fake_filter"]``) to the controller's store at once,
then waits for ``params["release_file"]`` (created by the test) before "training", and returns
``params["fake_result"]``. So a test sees the filter go in while the run still goes on.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from daic.operators.runners.local_worker import report_stage


def run(params: dict[str, Any]) -> dict[str, Any]:
    from daic.storage import open_store

    report_stage("estimate-accuracy")
    store = open_store(os.environ.get("DAIC_STORE"))
    store.put_json(f"cycles/{params['cycle_id']}/filter.json", params["fake_filter"])
    report_stage("fit-filter")
    release = Path(params["release_file"])
    deadline = time.monotonic() + float(params.get("wait_timeout_s", 120))
    while not release.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} was not created in time")
        time.sleep(0.02)
    report_stage("train")
    report_stage("evaluate")
    return dict(params["fake_result"])
