"""The join of what the executor logs per prediction (daic.sidecar.join) and the plan read from a
rendered graph (daic.serving.graph), on events built as the v1.18.2 executor logs them."""
from __future__ import annotations

import itertools
import random

import pytest

from daic.serving.graph import JoinPlan, NodeEvents, join_plan, pick_chain_ends
from daic.sidecar.events import encode_cloudevent, parse_cloudevent
from daic.sidecar.join import JoinBuffer

X, T, Y = b'{"data":{"ndarray":[[1]]}}', b'{"data":{"ndarray":[[2]]}}', b'{"data":{"ndarray":[[0.9]]}}'
FILTER = {"name": "filter", "type": "TRANSFORMER", "logger": {"mode": "all"},
          "children": [{"name": "classifier", "type": "MODEL", "children": []}]}
BOTH = {**FILTER, "children": [{**FILTER["children"][0], "logger": {"mode": "all"}}]}


def _event(kind, rid, body=X, node="classifier", t=0.0, eid=None):
    headers, body = encode_cloudevent(kind, rid, body, source="http://executor", model_id=node, event_id=eid)
    return parse_cloudevent(headers, body, now=t)


def _executor_events(graph_events, rid="p"):
    """(node, kind, body) as predictor_process.go logs them for X -> filter -> T -> classifier -> Y."""
    return [_event(kind, rid, body, node, eid=f"{rid}-{i}") for i, (node, kind, body) in enumerate(graph_events)]


ROOT_ONLY = [("filter", "request", X), ("filter", "response", T), ("filter", "request", T),
             ("filter", "response", Y)]
ON_BOTH = ROOT_ONLY + [("classifier", "request", T), ("classifier", "response", Y)]


def test_the_plan_follows_the_executor_for_daic_graphs():
    assert join_plan({"name": "classifier", "type": "MODEL", "logger": {"mode": "all"}}) == JoinPlan.single()
    root_only = join_plan(FILTER)
    assert (root_only.entry, root_only.answer, root_only.feedback) == ("filter", "filter", "filter")
    assert root_only.nodes == {"filter": NodeEvents(requests=2, responses=2)}
    both = join_plan(BOTH)
    assert both.nodes["classifier"] == NodeEvents(requests=1, responses=1) and both.answer == "filter"
    leaf_only = join_plan({**FILTER, "logger": None, "children": BOTH["children"]})
    assert (leaf_only.entry, leaf_only.answer, leaf_only.input_is_graph_input) == ("classifier", "classifier", False)


@pytest.mark.parametrize("graph, words", [
    ({"name": "classifier", "type": "MODEL"}, "no node of the graph has a logger"),
    ({**BOTH, "logger": {"mode": "request"}}, "give it mode 'all'"),
    ({**FILTER, "logger": {"mode": "request"}}, "shapes the answer"),
    ({**FILTER, "logger": {"mode": "loud"}}, "logger.mode"),
    ({**FILTER, "children": [{"name": "filter", "type": "MODEL"}]}, "appears twice"),
    ({"name": "mix", "type": "COMBINER", "children": [{"name": "a", "type": "MODEL", "logger": {"mode": "all"}},
                                                       {"name": "b", "type": "MODEL"}]}, "shapes the answer"),
])
def test_graphs_the_sidecar_cannot_join_are_refused_with_the_reason(graph, words):
    with pytest.raises(ValueError, match=words):
        join_plan(graph)


@pytest.mark.parametrize("graph, events", [(FILTER, ROOT_ONLY), (BOTH, ON_BOTH)], ids=["root-only", "both"])
def test_a_transformer_graph_joins_the_client_input_with_the_final_answer_in_any_order(graph, events):
    plan = join_plan(graph)
    rng = random.Random(0)
    for _ in range(20):  # the executor's logger workers deliver in any order
        shuffled = _executor_events(events)
        rng.shuffle(shuffled)
        buf = JoinBuffer(timeout_s=10, plan=plan)
        outcomes = [buf.add(e) for e in shuffled]
        joined = [o.joined for o in outcomes if o.status == "joined"]
        assert len(joined) == 1 and len(buf) == 0
        assert (joined[0].request.raw, joined[0].response.raw) == (X, Y)
        assert sum(o.status == "skipped" for o in outcomes) == len(events) - 4


def test_a_pass_through_transformer_still_gives_input_and_answer():
    # The filter gave back its input unchanged (X -> X), so X is also the model's input.
    buf = JoinBuffer(timeout_s=10, plan=join_plan(FILTER))
    events = _executor_events([("filter", "response", X), ("filter", "request", X), ("filter", "response", Y),
                               ("filter", "request", X)])
    outcomes = [buf.add(e) for e in events]
    assert outcomes[-1].status == "joined"
    assert (outcomes[-1].joined.request.raw, outcomes[-1].joined.response.raw) == (X, Y)


def test_chain_ends_are_a_multiset_difference():
    assert pick_chain_ends([X], [Y]) == (0, 0)
    assert pick_chain_ends([T, X], [Y, T]) == (1, 0)
    assert pick_chain_ends([X, T, T], [T, T, Y]) == (0, 2)
    assert pick_chain_ends([], []) == (None, None)


@pytest.mark.parametrize("first", ["request", "response"])
def test_single_node_joins_in_either_order(first):
    second = "response" if first == "request" else "request"
    buf = JoinBuffer(timeout_s=10)
    assert buf.add(_event(first, "a", t=1.0)).status == "pending"
    out = buf.add(_event(second, "a", t=2.0))
    assert out.status == "joined"
    assert out.joined.request.kind == "request" and out.joined.response.kind == "response"
    assert out.joined.time == 1.0 and len(buf) == 0


def test_duplicates_are_ignored_by_request_id_and_node():
    buf = JoinBuffer(timeout_s=10)
    assert buf.add(_event("request", "a")).status == "pending"
    assert buf.add(_event("request", "a")).status == "duplicate"  # a replayed event, new Ce-Id
    assert buf.add(_event("response", "a")).status == "joined"
    assert buf.add(_event("response", "a")).status == "duplicate"
    assert buf.add(_event("request", "a")).status == "duplicate"
    assert buf.add(_event("request", "b", node="somebody-else")).status == "skipped"
    assert len(buf) == 0


def test_the_same_event_twice_is_a_duplicate_in_a_multi_stage_node():
    buf = JoinBuffer(timeout_s=10, plan=join_plan(FILTER))
    assert buf.add(_event("request", "a", X, "filter", eid="e1")).status == "pending"
    assert buf.add(_event("request", "a", X, "filter", eid="e1")).status == "duplicate"
    assert len(buf.pending_events()) == 1


def test_expiry_reports_which_side_is_missing_and_late_events_are_duplicates():
    buf = JoinBuffer(timeout_s=5, plan=join_plan(FILTER))
    buf.add(_event("request", "old", X, "filter", t=0.0))
    buf.add(_event("response", "orphan", Y, "filter", t=0.0))
    buf.add(_event("request", "new", X, "filter", t=4.0))
    expired = {g.request_id: g for g in buf.expire(now=5.0)}
    assert set(expired) == {"old", "orphan"}
    assert expired["old"].has_request and not expired["orphan"].has_request
    assert [e.request_id for e in buf.pending_events()] == ["new"]
    assert buf.add(_event("response", "old", Y, "filter", t=6.0)).status == "duplicate"


def test_overflow_evicts_the_oldest_prediction():
    buf = JoinBuffer(timeout_s=5, max_pending=2)
    for rid in "ab":
        buf.add(_event("request", rid))
    out = buf.add(_event("request", "c"))
    assert [g.request_id for g in out.evicted] == ["a"]
    assert len(buf) == 2


def test_restore_round_trip_keeps_partial_multi_node_groups():
    plan = join_plan(BOTH)
    events = _executor_events(ON_BOTH)
    buf = JoinBuffer(timeout_s=5, plan=plan)
    for e in events[:3]:
        buf.add(e)
    other = JoinBuffer(timeout_s=5, plan=plan)
    other.restore(buf.pending_events(), buf.completed_ids())
    outcomes = [other.add(e) for e in events[3:]]
    assert [o.status for o in outcomes] == ["joined", "skipped", "skipped"]
    assert (outcomes[0].joined.request.raw, outcomes[0].joined.response.raw) == (X, Y)


def test_every_order_of_a_root_only_graph_joins_once():
    plan = join_plan(FILTER)
    for order in itertools.permutations(range(4)):
        events = _executor_events(ROOT_ONLY)
        buf = JoinBuffer(timeout_s=5, plan=plan)
        statuses = [buf.add(events[i]).status for i in order]
        assert statuses[-1] == "joined" and statuses.count("joined") == 1
