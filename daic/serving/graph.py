"""What Seldon Core v1's executor logs for an inference graph, and how the sidecar joins it (pure).

Read from the v1.18.2 executor (``executor/predictor/predictor_process.go``): for every request,
``Predict(node)`` runs three stages, and each stage of a node *with a logger* logs a request
event before it calls the node and a response event after a successful call, all under the one
``Ce-Requestid`` (the Seldon-Puid), with the node's name in ``Ce-Modelid``:

* ``transformInput``: a ``MODEL`` or ``TRANSFORMER`` node (or one with the ``TRANSFORM_INPUT``
  method) logs the message it is given and what the node answered;
* ``predictChildren``: a node *with children* logs the message it passes to them and what comes
  back (after ``aggregate``, which for a ``COMBINER`` logs one more pair of its own);
* ``transformOutput``: an ``OUTPUT_TRANSFORMER`` (or ``TRANSFORM_OUTPUT``) logs a last pair.

Logger mode ``request`` logs only the request events, ``response`` only the responses, ``all``
both. So a ``TRANSFORMER`` root with a ``MODEL`` child and a logger on the root alone sends four
events per prediction (client input -> transformed input, transformed input -> model output), and
six with a logger on both nodes. Feedback (``Feedback(node)``) is logged by every node whose logger
mode is ``response`` or ``all``, again under the request's puid (the ``Seldon-Puid`` header the
client put on the feedback call).

The stages of one node form a chain: each stage's input is the previous stage's output, byte for
byte (the executor hands the same payload on). So among the events one node logs for a request,
the graph input is the request whose bytes are not also one of its responses, and the node's
final output is the response whose bytes are not also one of its requests.

:func:`join_plan` turns a rendered graph (``spec.predictors[].graph`` of a SeldonDeployment, as
:mod:`daic.serving.manifest` builds it) into a :class:`JoinPlan`: which node's events give the
graph's input (the *entry* node: the root when its logger logs requests), which give the
response the client received (the *answer* node: the root when its logger logs responses, else
the first logged node down a chain of pass-through parents), how many events of each kind each of
them sends, and which node's feedback counts. Every other node's events are intermediate: the
sidecar acknowledges and counts them, and does not score them.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MODES = ("request", "response", "all")
_INPUT_TYPES = {"MODEL", "TRANSFORMER"}


class NodeEvents(BaseModel):
    """Events one node logs per prediction."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    requests: int = Field(ge=0)
    responses: int = Field(ge=0)


class JoinPlan(BaseModel):
    """How the sidecar joins one prediction's events (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    entry: str
    answer: str
    nodes: dict[str, NodeEvents]
    feedback: str | None = None
    #: False when the root logs no requests: the scored input is then what the entry node received.
    input_is_graph_input: bool = True

    @classmethod
    def single(cls, name: str = "classifier") -> "JoinPlan":
        """One MODEL node with ``logger.mode: all`` (daic's own SeldonDeployment)."""
        return cls(entry=name, answer=name, nodes={name: NodeEvents(requests=1, responses=1)}, feedback=name)

    def needed(self) -> dict[tuple[str, str], int]:
        """(node, kind) -> how many events of it one complete prediction needs. More than one
        request of the entry node needs its responses too (to tell the graph input from the
        node's later stages), and likewise for the answer node."""
        need: dict[tuple[str, str], int] = {}
        e, a = self.nodes[self.entry], self.nodes[self.answer]
        need[(self.entry, "request")] = e.requests
        if e.requests > 1:
            need[(self.entry, "response")] = e.responses
        need[(self.answer, "response")] = max(need.get((self.answer, "response"), 0), a.responses)
        if a.responses > 1:
            need[(self.answer, "request")] = max(need.get((self.answer, "request"), 0), a.requests)
        return need


def _node_events(node: dict[str, Any]) -> tuple[int, str | None]:
    """(stages that log, logger mode or None) of one node, per predictor_process.go."""
    node_type = str(node.get("type") or "")
    methods = {str(m) for m in node.get("methods") or []}
    children = node.get("children") or []
    stages = 0
    if node_type in _INPUT_TYPES or "TRANSFORM_INPUT" in methods:
        stages += 1
    if children:
        stages += 1
        if node_type == "COMBINER" or "AGGREGATE" in methods:
            stages += 1
    if node_type == "OUTPUT_TRANSFORMER" or "TRANSFORM_OUTPUT" in methods:
        stages += 1
    logger = node.get("logger")
    if not logger:
        return stages, None
    mode = str(logger.get("mode") or "all")
    if mode not in MODES:
        raise ValueError(f"graph node {node.get('name')!r}: logger.mode must be one of {', '.join(MODES)}, "
                         f"got {mode!r}")
    return stages, mode


def _walk(node: dict[str, Any]):
    yield node
    for child in node.get("children") or []:
        yield from _walk(child)


def join_plan(graph: dict[str, Any]) -> JoinPlan:
    """The :class:`JoinPlan` of a Seldon inference graph; ValueError names what cannot work (no
    node logs, or the input or the answer cannot be told apart from what is logged)."""
    if not isinstance(graph, dict) or not graph.get("name"):
        raise ValueError("the graph must be a Seldon predictive unit with a 'name'")
    nodes: dict[str, NodeEvents] = {}
    modes: dict[str, str] = {}
    order = []
    for node in _walk(graph):
        name = str(node.get("name") or "")
        if not name:
            raise ValueError("every graph node needs a 'name' (the executor logs it as Ce-Modelid)")
        if name in nodes or name in modes:
            raise ValueError(f"graph node name {name!r} appears twice: the executor's Ce-Modelid could not "
                             "tell the nodes apart")
        stages, mode = _node_events(node)
        order.append(name)
        if mode is None or stages == 0:
            modes[name] = ""
            continue
        modes[name] = mode
        nodes[name] = NodeEvents(requests=stages if mode in ("request", "all") else 0,
                                 responses=stages if mode in ("response", "all") else 0)
    if not nodes:
        raise ValueError("no node of the graph has a logger: the sidecar would see nothing (give the root "
                         "logger: {mode: all})")
    root = str(graph["name"])
    entry = root if root in nodes and nodes[root].requests else next(
        (n for n in order if n in nodes and nodes[n].requests), None)
    if entry is None:
        raise ValueError("no graph node logs requests: the sidecar cannot see the inputs (logger mode "
                         "'request' or 'all')")
    answer = _answer(graph, nodes)
    for name, role in ((entry, "entry"), (answer, "answer")):
        events = nodes[name]
        if max(events.requests, events.responses) > 1 and modes[name] != "all":
            raise ValueError(f"graph node {name!r} (the {role} node) logs {max(events.requests, events.responses)} "
                             f"stages per prediction with logger mode {modes[name]!r}: give it mode 'all' so the "
                             "sidecar can tell the graph's input and output from the intermediate stages")
    feedback = next((n for n in order if modes.get(n) in ("response", "all")), None)
    return JoinPlan(entry=entry, answer=answer, nodes=nodes, feedback=feedback,
                    input_is_graph_input=entry == root)


def _answer(graph: dict[str, Any], nodes: dict[str, NodeEvents]) -> str:
    """The node whose last logged response is what the client receives: walk down from the root
    while a node has no logged responses and passes its only child's answer through unchanged."""
    node = graph
    while True:
        name = str(node["name"])
        if name in nodes and nodes[name].responses:
            return name
        children = node.get("children") or []
        node_type = str(node.get("type") or "")
        methods = {str(m) for m in node.get("methods") or []}
        if len(children) != 1 or node_type in ("COMBINER", "OUTPUT_TRANSFORMER") \
                or methods & {"AGGREGATE", "TRANSFORM_OUTPUT"}:
            raise ValueError(f"graph node {name!r} shapes the answer but logs no responses: give it "
                             "logger: {mode: all} so the sidecar sees what the client receives")
        node = children[0]


def pick_chain_ends(requests: list[bytes], responses: list[bytes]) -> tuple[int | None, int | None]:
    """Indices of the graph input among one node's ``requests`` and of its final output among its
    ``responses`` (the module docstring's chain rule): the request whose bytes are not one of the
    responses, the response whose bytes are not one of the requests (multiset difference).
    None where the list is empty; the first one when every stage gave back its input unchanged."""
    def odd_one(mine: list[bytes], theirs: list[bytes]) -> int | None:
        if not mine:
            return None
        remaining: dict[bytes, int] = {}
        for body in theirs:
            remaining[body] = remaining.get(body, 0) + 1
        for i, body in enumerate(mine):
            if remaining.get(body, 0):
                remaining[body] -= 1
            else:
                return i
        return 0

    return odd_one(requests, responses), odd_one(responses, requests)
