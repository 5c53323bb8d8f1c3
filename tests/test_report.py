"""report.html from records in a store: figures, summary numbers, and errors."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from daic.cli import main
from daic.report import build_report
from daic.report.build import summarise
from daic.report.cycles import load_cycle
from daic.report.timeline import Timeline, TimelineEvent, TimelinePoint
from daic.storage import KeyNotFound, open_store


def _timeline() -> Timeline:
    pts = []
    for step in range(30):
        truth = 0.99 if step < 10 else (0.70 if step < 20 else 0.95)
        pts.append(TimelinePoint(step=step, true_accuracy=truth, estimate=truth - 0.02, lower=truth - 0.05,
                                 upper=truth + 0.01, drift=0.1 if step < 10 else 3.0, trusted=step < 12 or step > 19,
                                 model_version="v0001" if step < 20 else "v0002"))
    events = [TimelineEvent(step=12, kind="trigger", cycle="c1"), TimelineEvent(step=13, kind="assessment", cycle="c1"),
              TimelineEvent(step=15, kind="retrain", cycle="c1"), TimelineEvent(step=19, kind="promotion", cycle="c1")]
    return Timeline(run="r1", scenario="mixture", points=pts, events=events)


def _write_cycle(store, cycle="c1"):
    store.put_json(f"cycles/{cycle}/estimate.json", {
        "estimate": {"accuracy": 0.71, "lower": 0.66, "upper": 0.76, "n_labels": 200}, "srs_labels_needed": 450})
    store.put_json(f"cycles/{cycle}/evaluation.json", {
        "decision": {"promote": True, "reason": "better"}, "challenger_version": "v0002", "champion_version": "v0001"})
    ids = np.array(["a", "b", "c", "d"])
    store.put_arrays(f"cycles/{cycle}/sample.npz", pool_ids=np.array(["a", "b", "c", "d", "e"]),
                     pool_predictions=np.array([1, 2, 3, 4, 5]))
    store.put_arrays(f"cycles/{cycle}/sample-inputs.npz", ids=ids, inputs=np.zeros((4, 28, 28), np.float32))
    # b is mispredicted (2 vs 7), d is unlabeled (-1), a and c are right.
    store.put_arrays(f"cycles/{cycle}/labels.npz", ids=ids, labels=np.array([1, 7, 3, -1]))


def test_cycle_view_finds_exactly_the_mispredictions(tmp_path):
    store = open_store(f"file://{tmp_path}")
    _write_cycle(store)
    view = load_cycle(store, "c1")
    assert view.mispredicted_truth.tolist() == [7] and view.mispredicted_pred.tolist() == [2]
    assert view.labels_used == 200 and view.srs_labels == 450


def test_summary_numbers_come_from_the_records(tmp_path):
    store = open_store(f"file://{tmp_path}")
    _write_cycle(store)
    lines = summarise(_timeline(), [load_cycle(store, "c1")]).lines
    text = "\n".join(lines)
    # before: steps 9..12 truth (0.99, 0.70, 0.70, 0.70) -> 77.2%; after promotion: steps 20..29 -> 95.0%
    assert "before the cycle: 77.2%, after promotion: 95.0%" in text
    assert "trigger at step 12: online estimate 68.0%, truth 70.0%" in text
    assert "offline estimate 71.0% [66.0, 76.0]" in text
    assert "labels spent: 200 (random sampling would need 450" in text
    assert "decision: promote v0002" in text


def test_build_report_writes_html_and_figures(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    _write_cycle(store)
    _timeline().save(store)
    out = tmp_path / "report"
    path = build_report(store, out)
    html = path.read_text()
    for png in ("accuracy.png", "labels.png", "mispredictions.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'src="{png}"' in html
    assert "c1" in html and "0.710" in html and "no versions of model" in html


def test_a_cycle_that_failed_before_its_estimate_is_listed_without_one(tmp_path):
    """A run that failed early (e.g. in sample-operational) leaves a cycle with a record but no
    estimate.json: the report lists it with empty estimate cells instead of failing the demo."""
    store = open_store(f"file://{tmp_path / 'store'}")
    _write_cycle(store)
    store.put_json("cycles/c2/record.json", {"cycle": "c2", "outcome": "failed"})
    store.put_json("cycles/c3/estimate.json", {"estimate": {"accuracy": 0.5}})  # no interval
    timeline = _timeline()
    timeline.events += [TimelineEvent(step=22, kind="trigger", cycle="c2"), TimelineEvent(step=25, kind="trigger", cycle="c3")]
    timeline.save(store)
    html = build_report(store, tmp_path / "report").read_text()
    assert "<tr><td>c2</td>\n<td></td>\n<td></td>" in html
    assert "<tr><td>c3</td>\n<td>0.500</td>\n<td></td>" in html
    assert "0.710" in html and "[0.660, 0.760]" in html  # the complete cycle as before


def test_report_without_runs_is_a_clear_error(tmp_path):
    store = open_store(f"file://{tmp_path}")
    with pytest.raises(KeyNotFound, match="no run timeline"):
        build_report(store, tmp_path / "out")
    result = CliRunner().invoke(main, ["report", "--store", f"file://{tmp_path}", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "no run timeline" in result.output
