"""``daic status`` (issue 23): it shows the reading's age (time since the estimate's newest input),
and finds the controller state of ``daic demo`` from ``--cycle`` alone (the demo writes
``<work-dir>/<run>/cycle.yaml`` and ``<work-dir>/<run>/controller/``, not ``.daic/controller/``).
The controller is the real local one; the sidecar is the scripted stand-in (tests/fakes/sidecar.py)."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

from click.testing import CliRunner
from rich.console import Console

from daic.cli import main
from daic.demo.cycle_file import write_cycle_file
from daic.operators.local_controller import LocalController
from daic.operators.status_view import age, render
from fakes.sidecar import FakeSidecar, drifted_stream


def _cycle(sidecar_url: str) -> dict:
    return {"apiVersion": "daic.dev/v1alpha1", "kind": "AssessmentCycle", "metadata": {"name": "daic-demo"},
            "spec": {"deployment": {"name": "mnist"}, "estimate": {"url": sidecar_url},
                     "trigger": {"threshold": 0.5, "minWindow": 100}}}


def test_status_finds_the_demo_controller_state_from_the_cycle_file_alone(tmp_path, monkeypatch):
    run = tmp_path / "work" / "run-1"
    old = time.time() - 3 * 3600  # the newest input three hours ago (staleAfterSeconds raised to accept it)
    with FakeSidecar(drifted_stream(5, 0, start=old, step=1.0)) as sidecar:
        resource = _cycle(sidecar.url)
        resource["spec"]["estimate"]["staleAfterSeconds"] = 86_400
        cycle = write_cycle_file(run / "cycle.yaml", resource)  # what daic demo writes
        LocalController(cycle, run / "controller", f"file://{tmp_path / 'store'}").run(interval=0.01, passes=2)
    monkeypatch.chdir(tmp_path)  # not the run directory: nothing under ./.daic
    shown = CliRunner().invoke(main, ["status", "--cycle", str(cycle)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "daic-demo" in shown.output and "phase Monitoring" in shown.output
    assert "reading age 3.0 h" in shown.output, shown.output


def test_status_says_where_it_looked_when_there_is_no_state(tmp_path, monkeypatch):
    cycle = write_cycle_file(tmp_path / "run" / "cycle.yaml", _cycle("http://127.0.0.1:1/estimate"))
    monkeypatch.chdir(tmp_path)
    missing = CliRunner().invoke(main, ["status", "--cycle", str(cycle)])
    assert missing.exit_code == 1
    assert str(tmp_path / "run" / "controller") in missing.output and ".daic/controller/daic-demo" in missing.output
    # A state directory of another cycle beside the file is not taken for this one's.
    (tmp_path / "run" / "controller").mkdir()
    (tmp_path / "run" / "controller" / "status.json").write_text(json.dumps({"metadata": {"name": "other"}}))
    assert CliRunner().invoke(main, ["status", "--cycle", str(cycle)]).exit_code == 1


def test_render_shows_the_age_of_the_reading_and_a_failed_read():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    doc = {"metadata": {"name": "c"}, "spec": {"deployment": {"name": "mnist"}},
           "status": {"phase": "Monitoring", "estimate": {
               "accuracy": 0.97, "n": 500, "observedAt": (now - timedelta(seconds=42)).isoformat(),
               "receivedAt": (now - timedelta(seconds=30)).isoformat()},
               "estimateError": "Prometheus http://p: the estimate's newest input is ... no new evidence"}}
    console = Console(record=True, width=200)
    render(doc, [], console=console, now=now)
    text = console.export_text()
    assert "reading age 42 s" in text and "first read 30 s ago" in text and "no new evidence" in text
    assert [age((now - timedelta(seconds=s)).isoformat(), now) for s in (5, 600, 9000, 3 * 86400)] == \
        ["5 s", "10 min", "2.5 h", "3.0 d"]
    assert age(None, now) == "-" and age("not a time", now) == "?"
