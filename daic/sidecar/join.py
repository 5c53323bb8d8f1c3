"""Join the request and response halves of each prediction by request id (pure).

Seldon's executor logs request and response asynchronously, from a pool of workers, so the two
halves of one prediction arrive in either order, possibly twice (a retried POST), or one of them
never (the model answered with an error, so no response is logged). The buffer keeps the first
half until its partner arrives, is idempotent by request id (a half seen before, or any half of
an already joined request, is a duplicate), and gives up on a half after ``timeout_s``, reporting
it so the caller counts it as dropped: every accepted event ends as joined, duplicate or dropped.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

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
        """When the prediction was served: the earlier of the two halves."""
        return min(self.request.time, self.response.time)


@dataclass
class JoinOutcome:
    """``status`` is ``joined``, ``pending`` or ``duplicate``; ``evicted`` lists halves pushed out
    because more than ``max_pending`` were waiting (dropped, reason ``overflow``)."""

    status: str
    joined: Joined | None = None
    evicted: list[LoggedEvent] = field(default_factory=list)


class JoinBuffer:
    def __init__(self, timeout_s: float = 30.0, max_pending: int = 10_000, remember: int = 50_000) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if max_pending < 1 or remember < 1:
            raise ValueError("max_pending and remember must be >= 1")
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self.remember = remember
        self._pending: OrderedDict[str, LoggedEvent] = OrderedDict()
        self._completed: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, event: LoggedEvent) -> JoinOutcome:
        if event.kind not in ("request", "response"):
            raise ValueError(f"only request/response events are joined, got {event.kind!r}")
        rid = event.request_id
        if rid in self._completed:
            return JoinOutcome("duplicate")
        waiting = self._pending.get(rid)
        if waiting is not None:
            if waiting.kind == event.kind:
                return JoinOutcome("duplicate")
            del self._pending[rid]
            self._mark_completed(rid)
            pair = (waiting, event) if waiting.kind == "request" else (event, waiting)
            return JoinOutcome("joined", Joined(*pair))
        self._pending[rid] = event
        evicted = []
        while len(self._pending) > self.max_pending:
            _, oldest = self._pending.popitem(last=False)
            evicted.append(oldest)
        return JoinOutcome("pending", evicted=evicted)

    def expire(self, now: float) -> list[LoggedEvent]:
        """Remove and return halves that have waited longer than ``timeout_s``."""
        expired = []
        deadline = now - self.timeout_s
        for rid in list(self._pending):
            event = self._pending[rid]
            if event.time <= deadline:
                del self._pending[rid]
                self._mark_completed(rid)  # a late partner is then a duplicate, not a new half
                expired.append(event)
        return expired

    def _mark_completed(self, rid: str) -> None:
        self._completed[rid] = None
        self._completed.move_to_end(rid)
        while len(self._completed) > self.remember:
            self._completed.popitem(last=False)

    # State that must survive a restart (the write-ahead log's checkpoint) ------------------
    def pending_events(self) -> list[LoggedEvent]:
        return list(self._pending.values())

    def completed_ids(self) -> list[str]:
        return list(self._completed)

    def restore(self, pending: list[LoggedEvent], completed: list[str]) -> None:
        self._pending.clear()
        self._completed.clear()
        for rid in completed:
            self._mark_completed(rid)
        for event in pending:
            self._pending[event.request_id] = event
