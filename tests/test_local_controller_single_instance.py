"""One ``daic controller`` per state directory (operators/local_controller.py, ``exclusive``).

Two controllers on one state directory -- say one started while the old one still runs -- would
each read status.json, act, and overwrite the other's newer status (the kopf operator is protected
by the API server's resourceVersion; this loop has only the file). The second must stop at once,
naming the holder, without touching the status; the lock must go with its holder's process, even
on ``kill -9``, so that a restart still resumes. The holder here is a real second process."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from daic.cli import main
from daic.operators.local_controller import ControllerBusy, LocalController, exclusive
from daic.operators.status import Phase

HOLD = ("import sys; from pathlib import Path; from daic.operators.local_controller import exclusive\n"
        "with exclusive(Path(sys.argv[1])):\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.read()\n")


def _cycle(tmp_path: Path) -> Path:
    """A cycle whose spec is invalid: one pass is quick and needs no sidecar or pipeline."""
    path = tmp_path / "cycle.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "daic.dev/v1alpha1", "kind": "AssessmentCycle",
                                    "metadata": {"name": "one"},
                                    "spec": {"deployment": {"name": "mnist"}, "estimate": {"url": "http://x"},
                                             "trigger": {"threshold": 1.5}}}))
    return path


@pytest.fixture
def holder(tmp_path):
    """A second process holding the state directory's lock until it is killed."""
    state = tmp_path / "state"
    state.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(state)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "held"  # blocks until the lock is held: no sleep
        yield state, proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_a_second_controller_stops_naming_the_holder_and_leaves_the_status_alone(tmp_path, holder):
    state, proc = holder
    ctl = LocalController(_cycle(tmp_path), state, f"file://{tmp_path / 'store'}")
    with pytest.raises(ControllerBusy, match=rf"another controller \(pid {proc.pid}\) is running on"):
        ctl.run(passes=1)
    assert not (state / "status.json").exists() and not (state / "events.jsonl").exists()


def test_the_lock_goes_with_a_killed_holder_so_a_restart_resumes(tmp_path, holder):
    state, proc = holder
    ctl = LocalController(_cycle(tmp_path), state, f"file://{tmp_path / 'store'}")
    proc.send_signal(signal.SIGKILL)  # kill -9: no clean-up code runs in the holder
    proc.wait(timeout=30)
    status = ctl.run(passes=1)
    assert status.phase is Phase.degraded  # the pass ran (the spec is invalid on purpose)
    saved = json.loads((state / "status.json").read_text())
    assert saved["status"]["reason"] == "InvalidSpec"


def test_the_lock_is_released_after_run_and_within_one_process_is_not_reentrant(tmp_path):
    state = tmp_path / "state"
    ctl = LocalController(_cycle(tmp_path), state, f"file://{tmp_path / 'store'}")
    ctl.run(passes=1)
    ctl.run(passes=1)  # released when the first run returned
    with exclusive(state):
        with pytest.raises(ControllerBusy):
            ctl.run(passes=1)  # a second holder even in this process (another open file description)


def test_the_cli_exits_with_an_error_naming_the_other_controller(tmp_path, holder):
    state, proc = holder
    res = CliRunner().invoke(main, ["controller", "--cycle", str(_cycle(tmp_path)), "--state-dir", str(state),
                                    "--store", f"file://{tmp_path / 'store'}", "--passes", "1"])
    assert res.exit_code == 1, res.output
    assert f"another controller (pid {proc.pid})" in res.output
    assert "Traceback" not in res.output
