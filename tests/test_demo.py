"""The demo's pure parts: its AssessmentCycle, its traffic plan, and reading the controller's status.

The demo as a whole is `make demo` (minutes of training and a full cycle): not a unit test.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from daic.demo.config import DemoConfig
from daic.demo.controller_watch import ControllerWatch
from daic.demo.cycle_file import cycle_resource
from daic.demo.driver import DRIFT_STEPS, scenario_spec, scenario_step
from daic.operators.spec import parse_spec
from daic.operators.status import CurrentCycle, CycleStatus, CycleSummary, Decision, Phase, Stage


def test_cycle_resource_is_a_valid_assessment_cycle():
    cfg = DemoConfig(run="demo-test", labeler="simulated", budget=150)
    spec = scenario_spec(cfg)
    resource = cycle_resource(cfg, spec, "http://127.0.0.1:8300", "file:///tmp/s", since=1700000000.0)
    parsed = parse_spec(resource["spec"])
    assert parsed.labeling.budget == 150 and parsed.labeling.backend.value == "simulated"
    assert parsed.trigger.threshold == cfg.threshold
    params = parsed.pipeline.parameters
    assert params["since"] == "1700000000.0" and json.loads(params["simulated_scenario"])["name"] == "mixture"
    web = cycle_resource(DemoConfig(run="demo-web", labeler="web"), spec, "http://127.0.0.1:8300", "file:///s", 0.0)
    assert "simulated_scenario" not in web["spec"]["pipeline"]["parameters"]


def test_traffic_plan_is_clean_then_cycles_over_the_drift():
    cfg = DemoConfig(run="demo-test", clean_steps=4)
    spec = scenario_spec(cfg)
    assert spec.drift_start == 4 and spec.n_steps == 4 + DRIFT_STEPS
    steps = [scenario_step(cfg, k) for k in range(4 + 2 * DRIFT_STEPS + 1)]
    assert steps[:4] == [0, 1, 2, 3]
    assert steps[4] == 4 and steps[4 + DRIFT_STEPS] == 4 and max(steps) == spec.n_steps - 1


def test_bad_config_is_rejected_naming_the_field():
    with pytest.raises(ValidationError, match="covariate drift"):
        DemoConfig(scenario="stationary")
    with pytest.raises(ValidationError, match="mixture entry"):
        DemoConfig(mixture=(("no-such", 3),))
    with pytest.raises(ValidationError, match="budget"):
        DemoConfig(budget=3)


def _write(path, status: CycleStatus):
    path.write_text(json.dumps({"status": status.to_wire()}))


def test_controller_watch_turns_status_changes_into_events_once(tmp_path):
    path = tmp_path / "status.json"
    watch = ControllerWatch(path)
    assert watch.poll(0) == []  # no file yet
    now = datetime.now(timezone.utc)
    current = CurrentCycle(cycle=1, run_name="c-1", started_at=now, trigger_reason="estimate 0.71 < 0.93",
                           trigger_estimate=0.71)
    _write(path, CycleStatus(phase=Phase.assessing, stage=Stage.labeling, current=current))
    assert [(e.kind, e.step) for e in watch.poll(5)] == [("trigger", 5)]
    assert watch.poll(6) == []  # the same status again: nothing new
    _write(path, CycleStatus(phase=Phase.improving, stage=Stage.training,
                             current=current.model_copy(update={"result": {"offlineAccuracy": 0.7}})))
    assert [e.kind for e in watch.poll(7)] == ["assessment", "retrain"]
    summary = CycleSummary(cycle=1, run_name="c-1", started_at=now, finished_at=now, trigger_reason="x",
                           trigger_estimate=0.71, offline_accuracy=0.7, labels_used=200,
                           decision=Decision.promoted, record_key="cycles/c-1/record.json")
    _write(path, CycleStatus(phase=Phase.cooldown, history=[summary]))
    events = watch.poll(9)
    assert [e.kind for e in events] == ["promotion"] and watch.finished[0]["decision"] == "promoted"
    assert watch.poll(10) == [] and len(watch.finished) == 1
