"""The demo's summary prints the regained fraction of the drop (issue 16)."""
from __future__ import annotations

from daic.report.build import regained_fraction, summarise
from daic.report.cycles import CycleView
from daic.report.timeline import Timeline, TimelineEvent, TimelinePoint


def _timeline() -> Timeline:
    pts = [TimelinePoint(step=s, true_accuracy=0.99 if s < 10 else (0.70 if s < 20 else 0.95), estimate=0.9,
                         lower=0.8, upper=0.95, drift=0.1, trusted=True, model_version="v0001") for s in range(30)]
    events = [TimelineEvent(step=12, kind="trigger", cycle="c1"), TimelineEvent(step=19, kind="promotion", cycle="c1")]
    return Timeline(run="r1", scenario="mixture", points=pts, events=events)


def test_regained_fraction_is_measured_against_the_champions_clean_accuracy():
    cycle = CycleView(cycle="c1", evaluation={"champion_clean": 0.99})
    # before: steps 9..12 = (0.99, 0.70, 0.70, 0.70) -> 0.7725; after: 0.95 -> (0.95 - 0.7725) / (0.99 - 0.7725)
    lines = "\n".join(summarise(_timeline(), [cycle]).lines)
    assert "regained 0.82 of the drop (to the champion's clean accuracy 99.0%)" in lines
    fraction, clean = regained_fraction(0.7, 0.8, [cycle])
    assert abs(fraction - 0.1 / 0.29) < 1e-12 and clean == 0.99


def test_no_fraction_without_a_clean_reference_or_a_promotion():
    assert regained_fraction(0.7, 0.8, [CycleView(cycle="c1")]) is None
    assert regained_fraction(0.7, None, [CycleView(cycle="c1", evaluation={"champion_clean": 0.99})]) is None
    assert regained_fraction(0.995, 0.999, [CycleView(cycle="c1", evaluation={"champion_clean": 0.99})]) is None
    lines = "\n".join(summarise(_timeline(), [CycleView(cycle="c1")]).lines)
    assert "regained" not in lines
