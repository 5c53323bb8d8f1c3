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


def test_the_demo_cycle_asks_for_both_remedies_with_quick_filter_settings():
    from daic.pipelines.local_run import pipeline_parameters

    cfg = DemoConfig(run="demo-test", **DemoConfig.quick_defaults())
    assert cfg.remedy == "both"
    resource = cycle_resource(cfg, scenario_spec(cfg), "http://127.0.0.1:8300", "file:///tmp/s", 0.0,
                              generic_filter="v0002")
    parsed = parse_spec(resource["spec"])
    assert parsed.remedy.value == "both"
    params = parsed.pipeline.parameters
    assert (params["filter_generic_version"], params["filter_base_limit"], params["filter_pool_limit"]) == \
        ("v0002", 1000, 600)
    assert set(params) <= set(pipeline_parameters()), "every parameter is one the pipeline declares"
    retrain = cycle_resource(DemoConfig(run="demo-r", remedy="retrain"), scenario_spec(cfg), "http://x", "file:///s", 0.0)
    assert parse_spec(retrain["spec"]).remedy.value == "retrain"
    assert "filter_generic_version" not in retrain["spec"]["pipeline"]["parameters"]
    with pytest.raises(ValidationError, match="remedy"):
        DemoConfig(remedy="pray")


def test_controller_watch_marks_the_remedy_decision_and_the_filter_going_in_and_out(tmp_path):
    from daic.operators.status import FilterRollout, RemedyStatus, ServedFilter

    path = tmp_path / "status.json"
    watch = ControllerWatch(path)
    now = datetime.now(timezone.utc)
    remedy = RemedyStatus(decision="deploy", retrain=True, compare_to="wrapped-champion",
                          reason="remedy both: champion+filter 0.80 beats champion 0.64", decided_at=now,
                          filter_version="v0002", rollout=FilterRollout.promote)
    current = CurrentCycle(cycle=1, run_name="c-1", started_at=now, trigger_reason="x", trigger_estimate=0.7,
                           remedy=remedy)
    _write(path, CycleStatus(phase=Phase.improving, stage=Stage.training, current=current))
    events = watch.poll(3)
    assert [e.kind for e in events] == ["trigger", "retrain", "remedy"]
    assert events[-1].detail.startswith("filter deploy: remedy both: champion+filter 0.80")
    deployed = current.model_copy(update={"remedy": remedy.model_copy(update={"outcome": "deployed",
                                                                              "rollout": FilterRollout.done})})
    served = ServedFilter(version="v0002", since=now)
    _write(path, CycleStatus(phase=Phase.improving, stage=Stage.training, current=deployed, filter=served))
    assert [e.kind for e in watch.poll(4)] == ["filter-in"]
    summary = CycleSummary(cycle=1, run_name="c-1", started_at=now, finished_at=now, trigger_reason="x",
                           trigger_estimate=0.7, decision=Decision.promoted, record_key="cycles/c-1/record.json",
                           remedy="deploy", remedy_reason=remedy.reason, filter_outcome="removed-at-promotion",
                           filter_version="v0002")
    _write(path, CycleStatus(phase=Phase.cooldown, history=[summary]))
    assert sorted(e.kind for e in watch.poll(9)) == ["filter-out", "promotion"]
    assert watch.poll(10) == []

    # A filter taken out later (traffic clean again) is one more filter-out, once.
    fresh = ControllerWatch(tmp_path / "s2.json")
    _write(fresh.status_path, CycleStatus(filter=served))
    fresh.poll(1)
    _write(fresh.status_path, CycleStatus())
    assert [e.kind for e in fresh.poll(2)] == ["filter-out"] and fresh.poll(3) == []


def test_the_report_marks_the_remedy_and_the_summary_shows_the_filtered_accuracy(tmp_path):
    from daic.report.build import summarise
    from daic.report.plots import accuracy_over_time
    from daic.report.timeline import Timeline, TimelineEvent, TimelinePoint

    points = [TimelinePoint(step=k, true_accuracy=0.98 if k < 3 else (0.64 if k < 6 else (0.80 if k < 9 else 0.95)),
                            estimate=0.9) for k in range(12)]
    events = [TimelineEvent(step=3, kind="trigger", cycle="c-1"),
              TimelineEvent(step=5, kind="remedy", cycle="c-1", detail="filter deploy: remedy both: beats"),
              TimelineEvent(step=5, kind="filter-in", cycle="c-1"),
              TimelineEvent(step=8, kind="promotion", cycle="c-1"),
              TimelineEvent(step=8, kind="filter-out", cycle="c-1")]
    timeline = Timeline(run="r", points=points, events=events)
    lines = summarise(timeline, []).lines
    assert "with the input filter (0 new labels), steps 6-8: 80.0%" in lines
    assert "remedy at step 5: filter deploy: remedy both: beats" in lines
    assert any(line.endswith("after promotion: 95.0%") for line in lines)
    name = accuracy_over_time(timeline, [], tmp_path)
    assert (tmp_path / name).stat().st_size > 10_000
