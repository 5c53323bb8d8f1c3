"""What serves after a cycle with a challenger (issue 21), as a table over the pure functions in
operators/reconcile.py: the challenger alone, the challenger behind the filter, the champion behind
the filter, or the champion alone, by their estimates on the cycle's labeled held-out draws."""
from __future__ import annotations

import pytest

from daic.operators.reconcile import SERVE_CHOICES, choose_challenger_variant, choose_serving

# champion, wrapped champion, challenger, challenger+filter, filter in service, min improvement -> serve, accuracy
ROWS = [
    # no filter serves: the better challenger variant against the champion
    (0.64, None, 0.90, None, False, 0.0, "challenger", 0.90),
    (0.64, None, 0.90, 0.93, False, 0.0, "challenger+filter", 0.93),
    (0.64, None, 0.90, 0.90, False, 0.0, "challenger", 0.90),          # a tie: the simpler graph
    (0.64, None, 0.90, 0.85, False, 0.0, "challenger", 0.90),          # the filter costs the new model
    (0.64, None, 0.60, 0.62, False, 0.0, "champion", 0.62),            # neither beats the champion
    (0.64, None, 0.66, None, False, 0.05, "champion", 0.66),           # gain below min_improvement
    # the filter serves: the challenger must beat the wrapped champion
    (0.64, 0.88, 0.90, 0.86, True, 0.0, "challenger", 0.90),
    (0.64, 0.88, 0.86, 0.91, True, 0.0, "challenger+filter", 0.91),
    (0.64, 0.88, 0.86, 0.87, True, 0.0, "champion+filter", 0.87),      # beats the champion, not the wrapped one
    (0.64, 0.88, 0.88, 0.88, True, 0.0, "champion+filter", 0.88),      # a tie keeps what serves
    (0.64, 0.88, 0.90, None, True, 0.05, "champion+filter", 0.90),
    (0.64, None, 0.70, None, True, 0.0, "challenger", 0.70),           # no wrapped estimate: the champion's
    # no challenger judged, or nothing to compare with: what serves stays
    (0.64, 0.88, None, None, True, 0.0, "champion+filter", None),
    (0.64, None, None, 0.95, False, 0.0, "champion", None),
    (None, None, 0.90, None, False, 0.0, "champion", 0.90),
]


@pytest.mark.parametrize("champion,wrapped,challenger,filtered,serving,need,serve,acc", ROWS)
def test_serving_choice_table(champion, wrapped, challenger, filtered, serving, need, serve, acc):
    c = choose_serving(champion=champion, wrapped_champion=wrapped, challenger=challenger,
                       challenger_filtered=filtered, filter_in_service=serving, min_improvement=need)
    assert (c.serve, c.accuracy) == (serve, acc)
    assert c.serve in SERVE_CHOICES
    assert c.promotes == (serve in ("challenger", "challenger+filter"))
    assert c.filtered == serve.endswith("+filter")
    assert c.reason  # every choice says why


def test_reason_names_the_comparison():
    c = choose_serving(champion=0.64, wrapped_champion=0.88, challenger=0.86, challenger_filtered=0.91,
                       filter_in_service=True)
    assert "challenger+filter 0.9100 > challenger alone 0.8600" in c.reason
    assert "beats champion+filter 0.8800" in c.reason
    kept = choose_serving(champion=0.64, wrapped_champion=0.88, challenger=0.80, challenger_filtered=0.70,
                          filter_in_service=True)
    assert "does not help the new model" in kept.reason and "champion+filter keeps serving" in kept.reason


def test_variant_without_filter_figure_is_the_challenger():
    assert choose_challenger_variant(0.9, None)[:2] == ("challenger", 0.9)
    assert choose_challenger_variant(None, 0.9)[:2] == ("challenger", None)


@pytest.mark.parametrize("alone_ok,filtered_ok,serve,acc", [
    (True, True, "challenger+filter", 0.97),    # both keep clean: the better one on the held-out draws
    (True, False, "challenger", 0.95),          # the filter's gate costs clean accuracy: passed over
    (False, True, "challenger+filter", 0.97),
    (False, False, "challenger+filter", 0.97),  # neither: the better one, which the clean rule then refuses
])
def test_a_variant_that_fails_the_clean_check_is_passed_over(alone_ok, filtered_ok, serve, acc):
    c = choose_serving(champion=0.70, wrapped_champion=0.92, challenger=0.95, challenger_filtered=0.97,
                       filter_in_service=True, alone_keeps_clean=alone_ok, filtered_keeps_clean=filtered_ok)
    assert (c.serve, c.accuracy) == (serve, acc)
    assert c.variant == serve  # it promotes: the variant judged is what serves
    if alone_ok != filtered_ok:
        assert "loses more clean accuracy than the rule tolerates" in c.reason
    # the clean check never lifts a variant over what serves: alone 0.90 < champion+filter 0.92
    kept = choose_serving(champion=0.70, wrapped_champion=0.92, challenger=0.90, challenger_filtered=0.97,
                          filter_in_service=True, filtered_keeps_clean=False)
    assert kept.serve == "champion+filter" and kept.variant == "challenger"  # the variant judged, not served


def test_daic_status_shows_what_serves_and_why():
    from datetime import datetime, timezone

    from rich.console import Console

    from daic.operators.status_view import render

    now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc).isoformat()
    remedy = {"decision": "deploy", "retrain": True, "compareTo": "wrapped-champion", "reason": "filter beats",
              "decidedAt": now, "filterVersion": "v0003", "outcome": "deployed", "serve": "challenger+filter",
              "serveReason": "challenger+filter 0.9600 > challenger alone 0.8900", "challengerFilterVersion": "v0005"}
    history = {"cycle": 1, "runName": "r1", "startedAt": now, "finishedAt": now, "triggerReason": "drop",
               "triggerEstimate": 0.8, "decision": "challenger-not-better", "recordKey": "k", "remedy": "deploy",
               "remedyReason": "filter beats", "filterOutcome": "deployed", "filterVersion": "v0003",
               "serve": "champion+filter", "serveReason": "champion+filter keeps serving"}
    doc = {"metadata": {"name": "c"}, "spec": {"deployment": {"name": "mnist"}},
           "status": {"phase": "Improving", "history": [history],
                      "current": {"cycle": 2, "runName": "r2", "startedAt": now, "triggerReason": "drop",
                                  "triggerEstimate": 0.8, "remedy": remedy}}}
    console = Console(record=True, width=400)
    render(doc, [], console=console)
    text = console.export_text()
    assert "serves after the evaluation: challenger+filter (filter v0005): challenger+filter 0.9600" in text
    assert "serves champion+filter: champion+filter keeps serving" in text
