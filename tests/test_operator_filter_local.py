"""The filter remedy on the embedded default (issue 21): ``daic controller``'s loop (real local
adapters: HTTP estimate reader, worker process for the run, LocalDeployment, the object store on
disk) acting on a deploy decision and on a removal. The filter goes in by the store's filter
service record, which the local gateway's TRANSFORMER node follows (daic.serving.filter; its own
test is tests/test_filter_serving.py). Stand-ins at process/HTTP boundaries only:
tests/fakes/sidecar.py (estimates) and tests/fakes/filter_pipeline.py (writes the fit-filter
record, then waits for a file the test creates)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from daic.operators.local_controller import LocalController
from daic.operators.status import Decision
from daic.storage import open_store
from fakes.sidecar import FakeSidecar, drifted_stream
from fakes.waiting import RESULT

FAKE = f"{Path(__file__).parent / 'fakes' / 'filter_pipeline.py'}:run"
FILTER = {"champion_accuracy": 0.70, "filter_accuracy": 0.86, "filter_version": "v0001", "gate": "gated",
          "filter_holdout_accuracy": 0.90, "decision": "deploy"}


def setup_store(tmp: Path) -> str:
    """A classifier v0001 and a filter v0001 wrapping it (untrained: the registry is what is real here)."""
    from daic.components.testing.registry import register_untrained
    from daic.filters.network import FilterNet
    from daic.filters.registry import FilterRegistry
    from daic.models.card import DataLineage

    url = f"file://{tmp / 'store'}"
    store = open_store(url)
    register_untrained(store, [None])
    FilterRegistry(store, "mnist").register_filter(net=FilterNet(), data=DataLineage(dataset="mnist", base_count=0),
                                                   wraps_version="v0001")
    return url


def write_cycle(path: Path, sidecar_url: str, tmp: Path, result: dict) -> Path:
    spec = {"deployment": {"name": "mnist"}, "estimate": {"url": sidecar_url},
            "trigger": {"threshold": 0.9, "minWindow": 100, "consecutive": 2},
            "promotion": {"mode": "auto", "canaryShare": 10, "canarySeconds": 0}, "cooldownSeconds": 0,
            "remedy": "both",
            "pipeline": {"parameters": {"release_file": str(tmp / "release"), "fake_filter": FILTER,
                                        "fake_result": result}}}
    path.write_text(yaml.safe_dump({"apiVersion": "daic.dev/v1alpha1", "kind": "AssessmentCycle",
                                    "metadata": {"name": "local"}, "spec": spec}))
    return path


def step_until(ctl: LocalController, predicate, what: str, passes: int = 600):
    for _ in range(passes):
        status = ctl.step().status
        if predicate(status):
            return status
        time.sleep(0.02)
    raise AssertionError(f"no {what} after {passes} passes: {ctl.load().get('status')}")


def events(state: Path) -> list[str]:
    return [json.loads(line)["reason"] for line in (state / "events.jsonl").read_text().splitlines()]


def test_the_filter_goes_in_while_the_run_trains_and_a_promotion_takes_it_out(tmp_path):
    from daic.filters.registry import read_service

    url = setup_store(tmp_path)
    state = tmp_path / "state"
    with FakeSidecar(drifted_stream(3, 10_000)) as sidecar:
        ctl = LocalController(write_cycle(tmp_path / "cycle.yaml", sidecar.url, tmp_path, RESULT), state, url, FAKE)
        status = step_until(ctl, lambda s: s.filter is not None, "filter in service")
        assert status.current is not None, "the filter serves while the run still trains"
        service = read_service(open_store(url), "mnist")
        assert (service.version, service.gate) == ("v0001", "gated")
        split = json.loads((state / "deployment.json").read_text())
        assert (split["champion_version"], split["filter_version"], split["canary_version"]) == ("v0001", "v0001", None)
        (tmp_path / "release").write_text("go")
        status = step_until(ctl, lambda s: bool(s.history) and s.current is None, "finished cycle")
    (entry,) = status.history
    # RESULT's challenger (0.95) beats champion+filter (0.90 on held-out): promoted, the filter comes out.
    assert entry.decision is Decision.promoted
    started = [json.loads(line)["message"] for line in (state / "events.jsonl").read_text().splitlines()
               if json.loads(line)["reason"] == "PromotionStarted"]
    assert len(started) == 1 and "beats champion v0001+filter v0001 0.9000" in started[0]
    assert (entry.remedy, entry.filter_outcome) == ("deploy", "removed-at-promotion")
    assert status.filter is None and read_service(open_store(url), "mnist").version is None
    assert json.loads((state / "deployment.json").read_text())["champion_version"] == "v0002"
    reasons = events(state)
    for reason in ("RemedyDecided", "FilterCanaryServing", "FilterCanaryPassed", "FilterDeployed", "FilterRemoved",
                   "CyclePromoted"):
        assert reason in reasons, reason
    assert reasons.index("FilterDeployed") < reasons.index("CyclePromoted")
    record = open_store(url).get_json(f"cycles/{entry.run_name}/record.json")
    assert record["cycle"]["remedy"]["decision"] == "deploy" and "beats champion" in record["cycle"]["remedy"]["reason"]
    # `daic status` shows the decision, its outcome and its reason in the history.
    from click.testing import CliRunner

    from daic.cli import main

    shown = CliRunner(env={"COLUMNS": "400"}).invoke(main, ["status", "--state-dir", str(state), "--events", "0"])
    assert shown.exit_code == 0, shown.output
    assert "filter remedy" in shown.output and "deploy v0001 -> removed-at-promotion: remedy both:" in shown.output
    assert "filter in service: none" in shown.output


def test_a_kept_filter_comes_out_when_traffic_is_clean_again(tmp_path):
    from daic.filters.registry import read_service

    url = setup_store(tmp_path)
    state = tmp_path / "state"
    (tmp_path / "release").write_text("go")
    drifted = drifted_stream(3, 40)
    clean = [{**w, "accuracy": 0.97, "drift_alarm": False, "trusted": True,
              "timestamp": drifted[-1]["timestamp"] + 60 * (i + 1)} for i, w in enumerate(drifted_stream(10_000, 0))]
    # A challenger better than the champion (0.81) but not than champion+filter (0.90): the filter stays.
    with FakeSidecar(drifted + clean) as sidecar:
        ctl = LocalController(write_cycle(tmp_path / "cycle.yaml", sidecar.url, tmp_path,
                                          {**RESULT, "challenger_accuracy": 0.88}), state, url, FAKE)
        status = step_until(ctl, lambda s: bool(s.history) and s.current is None, "finished cycle")
        (entry,) = status.history
        assert entry.decision is Decision.challenger_not_better and "+filter v0001" in entry.message
        assert entry.filter_outcome == "deployed"
        status = step_until(ctl, lambda s: s.filter is None, "filter removed")
    assert read_service(open_store(url), "mnist").version is None
    assert json.loads((state / "deployment.json").read_text())["filter_version"] is None
    reasons = events(state)
    assert reasons.index("FilterRemoving") < reasons.index("FilterRemoved")
