"""What the operator tests share: a polling wait with a deadline, and a pipeline run's result."""
from __future__ import annotations

import time

RESULT = {"drop_confirmed": True, "offline_accuracy": 0.81, "offline_lower": 0.76, "offline_upper": 0.86,
          "labels_used": 150, "champion_version": "v0001", "champion_accuracy": 0.81,
          "challenger_version": "v0002", "challenger_accuracy": 0.95}


def wait_for(predicate, timeout=30.0, what="condition"):
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
