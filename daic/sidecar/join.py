"""Join what the executor logs for one prediction, for a whole inference graph (pure).

Seldon's executor logs request and response events asynchronously, from a pool of workers, for
every graph node that has a logger, all under one ``Ce-Requestid`` with the node's name in
``Ce-Modelid`` (daic.serving.graph). So the events of one prediction arrive in any order, possibly
twice (a replayed log), some never (the model answered with an error: no response is logged).

The buffer groups events by request id and keeps only those the :class:`~daic.serving.graph.JoinPlan`
needs: the entry node's requests (the graph's input) and the answer node's responses (what the
client got), plus the other kind of the same node where a node logs several stages (to tell its
first input and last output from the stages in between). Events of any other node are
intermediate: reported ``skipped``, never buffered. Once a group holds every needed event, the
prediction is joined as (graph input request, final response). It is idempotent: an event beyond
what the plan needs, or any event of an already joined request id, is a duplicate. A group gives up
after ``timeout_s``, reported so the caller counts the gap (a request that was never answered, or
a response whose request never came): every accepted event ends as joined, skipped, duplicate or
dropped.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from daic.serving.graph import JoinPlan, pick_chain_ends
from daic.sidecar.events import LoggedEvent


@dataclass(frozen=True)
class Joined:
    request: LoggedEvent
    response: LoggedEvent

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def time(self) -> float:
        """When the prediction was served: the earlier of the two events."""
        return min(self.request.time, self.response.time)


@dataclass
class Incomplete:
    """A request id given up on: its buffered events, and which side of the gap it is."""

    request_id: str
    events: list[LoggedEvent]
    has_request: bool  # the graph's input arrived (so this is a request without a response)


@dataclass
class JoinOutcome:
    """``status`` is ``joined``, ``pending``, ``duplicate`` or ``skipped`` (an intermediate node's
    event); ``evicted`` lists groups pushed out because more than ``max_pending`` were waiting."""

    status: str
    joined: Joined | None = None
    evicted: list[Incomplete] = field(default_factory=list)


@dataclass
class _Group:
    first_time: float
    events: dict[tuple[str, str], list[LoggedEvent]] = field(default_factory=dict)
    ids: set[str] = field(default_factory=set)

    def all(self) -> list[LoggedEvent]:
        return [e for events in self.events.values() for e in events]


class JoinBuffer:
    def __init__(self, timeout_s: float = 30.0, max_pending: int = 10_000, remember: int = 50_000,
                 plan: JoinPlan | None = None, max_pending_bytes: int | None = None) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if max_pending < 1 or remember < 1:
            raise ValueError("max_pending and remember must be >= 1")
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self.remember = remember
        self.plan = plan or JoinPlan.single()
        self.max_pending_bytes = max_pending_bytes
        self.pending_bytes = 0
        self._need = self.plan.needed()
        self._pending: OrderedDict[str, _Group] = OrderedDict()
        self._completed: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, event: LoggedEvent) -> JoinOutcome:
        if event.kind not in ("request", "response"):
            raise ValueError(f"only request/response events are joined, got {event.kind!r}")
        key = (event.model_id, event.kind)
        if key not in self._need:
            return JoinOutcome("skipped")
        rid = event.request_id
        if rid in self._completed:
            return JoinOutcome("duplicate")
        group = self._pending.get(rid)
        if group is None:
            group = self._pending[rid] = _Group(first_time=event.time)
        events = group.events.setdefault(key, [])
        if event.event_id in group.ids or len(events) >= self._need[key]:
            return JoinOutcome("duplicate")
        events.append(event)
        group.ids.add(event.event_id)
        self.pending_bytes += len(event.raw)
        if all(len(group.events.get(k, ())) >= n for k, n in self._need.items()):
            self._remove(rid)
            self._mark_completed(rid)
            return JoinOutcome("joined", self._join(group))
        evicted = []
        while len(self._pending) > self.max_pending or (
                self.max_pending_bytes is not None and self.pending_bytes > self.max_pending_bytes
                and len(self._pending) > 1):
            old_rid = next(iter(self._pending))
            oldest = self._remove(old_rid)
            self._mark_completed(old_rid)
            evicted.append(self._incomplete(old_rid, oldest))
        return JoinOutcome("pending", evicted=evicted)

    def _remove(self, rid: str) -> _Group:
        group = self._pending.pop(rid)
        self.pending_bytes -= sum(len(e.raw) for e in group.all())
        return group

    def _join(self, group: _Group) -> Joined:
        plan = self.plan
        entry_requests = group.events.get((plan.entry, "request"), [])
        entry_responses = group.events.get((plan.entry, "response"), [])
        answer_requests = group.events.get((plan.answer, "request"), [])
        answer_responses = group.events.get((plan.answer, "response"), [])
        first, _ = pick_chain_ends([e.raw for e in entry_requests], [e.raw for e in entry_responses])
        _, last = pick_chain_ends([e.raw for e in answer_requests], [e.raw for e in answer_responses])
        return Joined(entry_requests[first], answer_responses[last])

    def _incomplete(self, rid: str, group: _Group) -> Incomplete:
        has_request = bool(group.events.get((self.plan.entry, "request")))
        return Incomplete(rid, group.all(), has_request)

    def expire(self, now: float) -> list[Incomplete]:
        """Remove and return groups that have waited longer than ``timeout_s``."""
        expired = []
        deadline = now - self.timeout_s
        for rid in list(self._pending):
            group = self._pending[rid]
            if group.first_time <= deadline:
                self._remove(rid)
                self._mark_completed(rid)  # a late event is then a duplicate, not a new group
                expired.append(self._incomplete(rid, group))
        return expired

    def _mark_completed(self, rid: str) -> None:
        self._completed[rid] = None
        self._completed.move_to_end(rid)
        while len(self._completed) > self.remember:
            self._completed.popitem(last=False)

    # State that must survive a restart (the write-ahead log's checkpoint) ------------------
    def pending_events(self) -> list[LoggedEvent]:
        return [e for group in self._pending.values() for e in group.all()]

    def completed_ids(self) -> list[str]:
        return list(self._completed)

    def restore(self, pending: list[LoggedEvent], completed: list[str]) -> None:
        self._pending.clear()
        self._completed.clear()
        self.pending_bytes = 0
        for rid in completed:
            self._mark_completed(rid)
        for event in pending:
            key = (event.model_id, event.kind)
            if key not in self._need:
                continue
            group = self._pending.setdefault(event.request_id, _Group(first_time=event.time))
            group.first_time = min(group.first_time, event.time)
            group.events.setdefault(key, []).append(event)
            group.ids.add(event.event_id)
            self.pending_bytes += len(event.raw)
