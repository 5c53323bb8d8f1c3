"""``daic controller`` / ``daic status``: the reconcile loop on one machine.

The local adapters are real (HTTP estimate reader, worker processes for runs, the file-based
champion switch, the object store on disk). Two stand-ins, both at a process/HTTP boundary:
tests/fakes/sidecar.py serves the pseudo-oracle's estimate contract (a drifted stream), and the
pipeline callable is tests/fakes/pipeline.py (a real function in a real worker process that
waits for a file the test creates, so the test decides when the run may finish).
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from daic.cli import main
from daic.operators.local_controller import LocalController
from daic.operators.status import Decision, Phase
from daic.storage import open_store
from fakes.sidecar import FakeSidecar, drifted_stream
from fakes.waiting import RESULT
from fakes.waiting import wait_for as _wait_for


def wait_for(predicate, timeout=60.0, what="condition"):
    return _wait_for(predicate, timeout, what)


FAKE_PIPELINE = f"{Path(__file__).parent / 'fakes' / 'pipeline.py'}:run"



def write_cycle(path: Path, sidecar_url: str, tmp: Path, result=None, annotations=None, **spec_patch) -> Path:
    spec = {"deployment": {"name": "mnist"}, "estimate": {"url": sidecar_url},
            "trigger": {"threshold": 0.9, "minWindow": 100},
            "promotion": {"mode": "auto", "canaryShare": 10, "canarySeconds": 0},
            "cooldownSeconds": 0,
            "pipeline": {"parameters": {"release_file": str(tmp / "release"), "started_file": str(tmp / "started"),
                                        "fake_result": result or RESULT}}}
    spec.update(spec_patch)
    meta = {"name": "local"}
    if annotations:
        meta["annotations"] = annotations
    path.write_text(yaml.safe_dump({"apiVersion": "daic.dev/v1alpha1", "kind": "AssessmentCycle",
                                    "metadata": meta, "spec": spec}))
    return path


def read_status(state_dir: Path) -> dict:
    try:
        return json.loads((state_dir / "status.json").read_text())["status"]
    except FileNotFoundError:
        return {}


def events(state_dir: Path) -> list[str]:
    return [json.loads(line)["reason"] for line in (state_dir / "events.jsonl").read_text().splitlines()]


def test_a_drifted_stream_triggers_exactly_one_cycle_that_ends_in_promotion(tmp_path):
    store = f"file://{tmp_path / 'store'}"
    (tmp_path / "release").write_text("go")   # the run may finish at once
    with FakeSidecar(drifted_stream(3, 10_000)) as sidecar:
        cycle = write_cycle(tmp_path / "cycle.yaml", sidecar.url, tmp_path)
        ctl = LocalController(cycle, tmp_path / "state", store, FAKE_PIPELINE)
        status = ctl.run(interval=0.05, exit_after_cycles=1)
        assert status.history[0].decision is Decision.promoted
        # The stream stays drifted: many more passes start no second cycle (hysteresis).
        status = ctl.run(interval=0.01, passes=30)
        assert sidecar.requests > 30
    assert status.cycle_count == 1 and len(status.history) == 1
    assert (status.phase, status.reason) == (Phase.monitoring, "Disarmed")
    (entry,) = status.history
    assert (entry.champion_version, entry.challenger_version, entry.offline_lower) == ("v0001", "v0002", 0.76)
    assert json.loads((tmp_path / "state" / "deployment.json").read_text())["champion_version"] == "v0002"
    record = open_store(store).get_json(f"cycles/{entry.run_name}/record.json")
    assert record["state"] == "finished" and record["summary"]["decision"] == "promoted"
    assert record["cycle"]["result"]["store_seen"] == store, "the run writes to the controller's store"
    reasons = events(tmp_path / "state")
    assert reasons.count("CycleStarted") == 1 and "CyclePromoted" in reasons


def test_an_unconfirmed_drop_ends_in_a_documented_refusal(tmp_path):
    (tmp_path / "release").write_text("go")
    with FakeSidecar(drifted_stream(1, 10_000)) as sidecar:
        cycle = write_cycle(tmp_path / "cycle.yaml", sidecar.url, tmp_path, result={**RESULT, "drop_confirmed": False})
        status = LocalController(cycle, tmp_path / "state", f"file://{tmp_path / 'store'}",
                                 FAKE_PIPELINE).run(interval=0.05, exit_after_cycles=1)
    (entry,) = status.history
    assert entry.decision is Decision.drop_not_confirmed
    assert "does not confirm the drop" in entry.message and "[0.7600, 0.8600] from 150 labels" in entry.message
    assert not (tmp_path / "state" / "deployment.json").exists(), "nothing was switched"


def test_with_the_real_pipeline_labels_overrule_a_wrong_online_alarm(tmp_path):
    """The whole local loop with the real assess-and-improve pipeline (kfp.local, the simulated
    labeler): the sidecar's estimate says the model collapsed (0.02), the trigger fires, the run
    samples and labels real operational records, and the offline interval does not confirm a drop
    below the threshold: the cycle ends in the documented refusal, with the labels' numbers."""
    import numpy as np

    from daic.components.testing.operational import write_operational
    from daic.data.mnist import load_split
    from daic.data.scenarios import Scenario, ScenarioSpec

    scenario = {"name": "sudden", "seed": 3, "batch_size": 40, "n_steps": 6, "drift_start": 3,
                "corruption": "translate", "severity": 3}
    train = load_split("train")
    x, y = train.images[:3000].reshape(3000, -1), train.labels[:3000]
    centroids = np.stack([x[y == c].mean(axis=0) for c in range(10)])

    def predict(images):
        logits = -0.5 * ((images.reshape(len(images), -1)[:, None, :] - centroids[None]) ** 2).sum(-1)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return {"probs": p / p.sum(axis=1, keepdims=True)}

    store_url = f"file://{tmp_path / 'store'}"
    write_operational(open_store(store_url), "mnist", Scenario(ScenarioSpec(**scenario)), predict)
    wrong = [{"accuracy": 0.02, "n": 500, "model_version": "v0001", "timestamp": time.time()}]
    with FakeSidecar(wrong) as sidecar:
        cycle = tmp_path / "cycle.yaml"
        cycle.write_text(yaml.safe_dump({
            "apiVersion": "daic.dev/v1alpha1", "kind": "AssessmentCycle", "metadata": {"name": "real"},
            "spec": {"deployment": {"name": "mnist"}, "estimate": {"url": sidecar.url},
                     "trigger": {"threshold": 0.05, "minWindow": 100},
                     "labeling": {"backend": "simulated", "budget": 40, "sampler": "srs"},
                     "pipeline": {"parameters": {"simulated_scenario": json.dumps(scenario),
                                                 "since": str(1_700_000_000 + 3 * 60), "labeling_poll_s": 0.5}},
                     "promotion": {"mode": "auto", "canaryShare": 0}}}))
        ctl = LocalController(cycle, tmp_path / "state", store_url, "daic.pipelines.local_run:run_pipeline")
        status = ctl.run(interval=0.2, exit_after_cycles=1)
    (entry,) = status.history
    assert entry.decision is Decision.drop_not_confirmed, entry.message
    assert entry.labels_used == 40 and 0.05 <= entry.offline_upper and entry.offline_lower <= entry.offline_accuracy
    assert open_store(store_url).exists(f"cycles/{entry.run_name}/estimate.json"), "the pipeline's own record"


def _controller(cycle: Path, state: Path, store: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "daic.cli", "controller", "--cycle", str(cycle), "--state-dir", str(state),
         "--store", store, "--pipeline-callable", FAKE_PIPELINE, "--interval", "0.05",
         "--champion-switch", "none", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("kill_in", ["Assessing", "AwaitingApproval"])
def test_kill_9_mid_cycle_and_a_restart_finish_the_same_cycle_once(tmp_path, kill_in):
    state, store = tmp_path / "state", f"file://{tmp_path / 'store'}"
    manual = kill_in == "AwaitingApproval"
    with FakeSidecar(drifted_stream(2, 100_000)) as sidecar:
        promotion = {"mode": "manual" if manual else "auto", "canaryShare": 10, "canarySeconds": 0}
        cycle = write_cycle(tmp_path / "cycle.yaml", sidecar.url, tmp_path, promotion=promotion)
        if manual:
            (tmp_path / "release").write_text("go")
        first = _controller(cycle, state, store)
        try:
            status = wait_for(lambda: (s := read_status(state)).get("phase") == kill_in and s.get("current") and s,
                              what=f"phase {kill_in}")
            run = status["current"]["runName"]
            if not manual:
                wait_for(lambda: (tmp_path / "started").exists(), what="the run's worker")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(30)
        assert first.returncode == -signal.SIGKILL
        worker_pid = json.loads((state / "runs" / run / "state.json").read_text())["pid"]
        if not manual:
            assert _alive(worker_pid), "the run outlives its controller"
            (tmp_path / "release").write_text("go")
        else:
            write_cycle(cycle, sidecar.url, tmp_path, promotion=promotion, annotations={"daic.dev/approve": "1"})
        second = _controller(cycle, state, store, "--exit-after-cycles", "1")
        out, _ = second.communicate(timeout=120)
        assert second.returncode == 0, out
    final = read_status(state)
    assert [h["runName"] for h in final["history"]] == [run] and final["cycleCount"] == 1
    assert final["history"][0]["decision"] == "promoted"
    assert [p.name for p in (state / "runs").iterdir() if p.is_dir()] == [run], "exactly one run"
    assert json.loads((state / "runs" / run / "state.json").read_text())["pid"] == worker_pid
    assert events(state).count("CycleStarted") == 1
    assert json.loads((state / "deployment.json").read_text())["champion_version"] == "v0002"


def test_status_command_shows_the_history_and_json(tmp_path, monkeypatch):
    (tmp_path / "release").write_text("go")
    with FakeSidecar(drifted_stream(1, 10_000)) as sidecar:
        cycle = write_cycle(tmp_path / "cycle.yaml", sidecar.url, tmp_path)
        LocalController(cycle, tmp_path / "state", f"file://{tmp_path / 'store'}", FAKE_PIPELINE).run(
            interval=0.05, exit_after_cycles=1)
    runner = CliRunner()
    shown = runner.invoke(main, ["status", "--state-dir", str(tmp_path / "state"), "--events", "3"],
                          env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "phase Monitoring" in shown.output and "promoted" in shown.output and "v0002" in shown.output
    assert "CycleStarted" not in shown.output and "CyclePromoted" in shown.output  # only the last 3 events
    raw = runner.invoke(main, ["status", "--state-dir", str(tmp_path / "state"), "--json"])
    assert json.loads(raw.output)["status"]["history"][0]["decision"] == "promoted"
    monkeypatch.chdir(tmp_path)
    missing = runner.invoke(main, ["status", "--cycle", str(cycle)])
    assert missing.exit_code == 1 and "has `daic controller` run for this cycle?" in missing.output
    assert runner.invoke(main, ["status"]).exit_code == 2


def test_controller_rejects_bad_input_clearly(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["controller", "--cycle", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2 and "no such file" in res.output
    (tmp_path / "wrong.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    res = runner.invoke(main, ["controller", "--cycle", str(tmp_path / "wrong.yaml")])
    assert res.exit_code == 2 and "expected apiVersion daic.dev/v1alpha1 and kind AssessmentCycle" in res.output
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump({"apiVersion": "daic.dev/v1alpha1", "kind": "AssessmentCycle",
                                                      "metadata": {"name": "x"}, "spec": {}}))
    res = runner.invoke(main, ["controller", "--cycle", str(tmp_path / "ok.yaml"), "--pipeline-callable", "nocolon"])
    assert res.exit_code == 2 and "module:function" in res.output
    res = runner.invoke(main, ["controller", "--cycle", str(tmp_path / "ok.yaml"), "--interval", "0"])
    assert res.exit_code == 2


def test_an_invalid_local_spec_is_reported_in_the_status_file(tmp_path):
    cycle = tmp_path / "cycle.yaml"
    cycle.write_text(yaml.safe_dump({"apiVersion": "daic.dev/v1alpha1", "kind": "AssessmentCycle",
                                     "metadata": {"name": "bad"},
                                     "spec": {"deployment": {"name": "mnist"}, "estimate": {"url": "http://x"},
                                              "trigger": {"threshold": 1.5}}}))
    status = LocalController(cycle, tmp_path / "state", f"file://{tmp_path / 'store'}", FAKE_PIPELINE).run(passes=1)
    assert (status.phase, status.reason) == (Phase.degraded, "InvalidSpec")
    assert "spec.trigger.threshold: Input should be less than 1 (got 1.5)" in status.message
