"""The local runner's stage comes from kfp.local's real task dispatch (no fake): while a task runs,
the run directory's ``stage`` file names that task, which is what ``daic status`` shows."""

import logging
import time
from pathlib import Path

import pytest
from kfp import dsl, local

from daic.operators.runners.kfp_stages import TaskStageFilter, reporting_task_stages, task_name
from daic.operators.runners.local import LocalRunner
from daic.operators.runners.local_worker import RUN_DIR_ENV


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def read_stage_first() -> str:
    import os
    return open(os.path.join(os.environ["DAIC_RUN_DIR"], "stage")).read()


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def read_stage_second(previous: str) -> str:
    import os
    return previous + "," + open(os.path.join(os.environ["DAIC_RUN_DIR"], "stage")).read()


@dsl.pipeline(name="stages")
def two_steps() -> str:
    first = read_stage_first()
    return read_stage_second(previous=first.output).output


def _local_run_dir(tmp_path, monkeypatch, raise_on_error: bool):
    """A run directory as the local worker sets one, and kfp.local initialised to run in this interpreter."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.setenv(RUN_DIR_ENV, str(run_dir))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               raise_on_error=raise_on_error)
    return run_dir


def test_each_task_sees_its_own_name_as_the_stage(tmp_path, monkeypatch):
    run_dir = _local_run_dir(tmp_path, monkeypatch, raise_on_error=True)
    with reporting_task_stages():
        task = two_steps()
    assert task.output == "read-stage-first,read-stage-second"
    assert (run_dir / "stage").read_text() == "read-stage-second"
    assert not any(isinstance(f, TaskStageFilter) for f in logging.getLogger().filters)


def test_without_the_filter_no_stage_is_written(tmp_path, monkeypatch):
    """The negative control: the stage file exists only because of the filter."""
    run_dir = _local_run_dir(tmp_path, monkeypatch, raise_on_error=False)
    two_steps()
    assert not (run_dir / "stage").exists()


@pytest.mark.parametrize("message,expected", [
    ("Executing task \x1b[96m'train'\x1b[0m", "train"),
    ("Executing task 'estimate-accuracy'", "estimate-accuracy"),
    ("Executing task train", "train"),
    ("Task 'train' finished with status SUCCESS", None),
    ("Executing task '../../etc'", None),
    ("", None),
])
def test_task_name(message, expected):
    assert task_name(message) == expected


def test_the_filter_passes_every_record_and_survives_a_failing_report():
    seen = []

    def report(name):
        seen.append(name)
        raise OSError("disk full")

    record = logging.LogRecord("root", logging.INFO, __file__, 1, "Executing task %s", ("'train'",), None)
    assert TaskStageFilter(report).filter(record) is True
    assert seen == ["train"]


def test_the_local_runner_shows_the_stage(tmp_path):
    """End to end through the durable local runner: the worker process runs a kfp.local pipeline."""
    callable_file = tmp_path / "entry.py"
    callable_file.write_text(
        "from kfp import local\n"
        "from daic.operators.runners.kfp_stages import reporting_task_stages\n"
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_kfp_stages import two_steps\n"
        "def run(params):\n"
        "    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=params['root'],\n"
        "               raise_on_error=True)\n"
        "    with reporting_task_stages():\n"
        "        return {'seen': two_steps().output}\n")
    runner = LocalRunner(tmp_path / "state", callable_ref=f"{callable_file}:run")
    runner.submit("r1", {"root": str(tmp_path / "root")})
    deadline = time.monotonic() + 120
    while not runner.get("r1").phase.terminal:
        assert time.monotonic() < deadline, "local run did not finish in 120 s"
        time.sleep(0.2)
    state = runner.get("r1")
    assert state.result == {"seen": "read-stage-first,read-stage-second"}, state.error
    assert state.stage == "read-stage-second"
