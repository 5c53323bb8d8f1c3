"""Report which step of a ``kfp.local`` pipeline run is executing, so ``daic status`` can show it.

On a cluster the operator reads each task's state from the Kubeflow API. On the embedded default
the pipeline runs inside one local worker (:mod:`.local_worker`) through ``kfp.local``, which
dispatches its tasks one at a time and announces each with ``logging.info("Executing task
'<name>'")`` from the orchestrating process before the task's subprocess starts. Without this
module the controller saw no stage at all and showed "submitted" for the whole run.

kfp.local replaces the root logger's *handlers* around every task (``local_logger_context``), so
a handler added there would be dropped; a *filter* on the root logger survives and sees every
record. It never blocks a record (it returns True) and only writes the stage file of the current
run (:func:`local_worker.report_stage`, a no-op outside a local run). The message format belongs
to kfp 2.17 (pinned); tests/test_kfp_stages.py runs a real kfp.local pipeline to pin it.
"""
from __future__ import annotations

import contextlib
import logging
import re
from typing import Callable, Iterator

from daic.operators.runners.local_worker import report_stage

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXECUTING = re.compile(r"^Executing task '?([A-Za-z0-9][A-Za-z0-9._-]*)'?$")


def task_name(message: str) -> str | None:
    """The task name in kfp.local's "Executing task 'name'" line (colour codes removed), else None."""
    match = _EXECUTING.match(_ANSI.sub("", message).strip())
    return match.group(1) if match else None


class TaskStageFilter(logging.Filter):
    """A root-logger filter that calls ``report(task)`` when kfp.local starts a task."""

    def __init__(self, report: Callable[[str], None] = report_stage):
        super().__init__()
        self.report = report

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            name = task_name(record.getMessage())
        except Exception:  # noqa: BLE001 - a malformed record must never break logging
            name = None
        if name is not None:
            try:
                self.report(name)
            except OSError:
                pass  # the stage is informational: a full disk must not fail the pipeline
        return True


@contextlib.contextmanager
def reporting_task_stages(report: Callable[[str], None] = report_stage) -> Iterator[TaskStageFilter]:
    """Install :class:`TaskStageFilter` on the root logger for the duration of a local run."""
    root = logging.getLogger()
    stage_filter = TaskStageFilter(report)
    root.addFilter(stage_filter)
    try:
        yield stage_filter
    finally:
        root.removeFilter(stage_filter)
