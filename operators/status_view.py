"""Render an AssessmentCycle resource (spec + status) for a person: ``daic status``."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from rich.console import Console
from rich.table import Table


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def age(stamp: str | None, now: datetime) -> str:
    """How long before ``now`` the RFC 3339 time ``stamp`` was: ``42 s``, ``7 min``, ``3.5 h``, ``2.0 d``."""
    if not stamp:
        return "-"
    try:
        then = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return "?"
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    seconds = (now - then).total_seconds()
    if seconds < 0:
        return f"{-seconds:.0f} s in the future"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def _remedy_cell(h: dict[str, Any]) -> str:
    """A finished cycle's filter decision, its outcome and its reason (the cycle record has the rest)."""
    if not h.get("remedy"):
        return "-"
    version = f" {h['filterVersion']}" if h.get("filterVersion") and h["remedy"] == "deploy" else ""
    outcome = f" -> {h['filterOutcome']}" if h.get("filterOutcome") else ""
    serve = f"; serves {h['serve']}: {h.get('serveReason') or ''}" if h.get("serve") else ""
    return f"{h['remedy']}{version}{outcome}: {h.get('remedyReason') or ''}{serve}"


def render(doc: dict[str, Any], events: list[dict[str, Any]] | None = None,
           console: Console | None = None, now: datetime | None = None) -> None:
    """``now`` (default: the clock) dates the estimate: its age is the time since its newest input."""
    console = console or Console()
    now = now or datetime.now(timezone.utc)
    meta, status = doc.get("metadata") or {}, doc.get("status") or {}
    spec = doc.get("spec") or {}
    stage = f" / {status['stage']}" if status.get("stage") else ""
    console.print(f"[bold]{meta.get('name', '?')}[/bold]  deployment "
                  f"{(spec.get('deployment') or {}).get('name', '?')}  phase [bold]{status.get('phase', '?')}"
                  f"{stage}[/bold]  ({status.get('reason', '')})")
    if status.get("message"):
        console.print(f"  {status['message']}")
    est = status.get("estimate")
    if est:
        band = f" [{_fmt(est.get('lower'))}, {_fmt(est.get('upper'))}]" if est.get("lower") is not None else ""
        console.print(f"  estimate {_fmt(est.get('accuracy'))}{band}  n={est.get('n')}  "
                      f"threshold {_fmt(status.get('effectiveThreshold'))}  "
                      f"drift alarm {est.get('driftAlarm')}  trusted {est.get('trusted')}  "
                      f"model {est.get('modelVersion') or '-'}")
        console.print(f"  reading age {age(est.get('observedAt'), now)} (newest input {est.get('observedAt')}; "
                      f"first read {age(est.get('receivedAt'), now)} ago)")
        if status.get("estimateError"):
            console.print(f"  latest read gave no new reading: {status['estimateError']}")
    elif status.get("estimateError"):
        console.print(f"  estimate unavailable: {status['estimateError']}")
    console.print(f"  cycles started {status.get('cycleCount', 0)}  armed {status.get('armed')}  "
                  f"cooldown until {status.get('cooldownUntil') or '-'}")
    cur = status.get("current")
    if cur:
        console.print(f"  in flight: cycle {cur['cycle']} run {cur['runName']} ({cur.get('runState') or 'submitted'})"
                      f" since {cur['startedAt']}; trigger {cur['triggerReason']} at {_fmt(cur['triggerEstimate'])}")
        rem = cur.get("remedy")
        if rem:
            rollout = rem.get("rollout")
            console.print(f"  remedy: filter {rem['decision']}{' ' + rem['filterVersion'] if rem.get('filterVersion') else ''}"
                          f" ({rem.get('outcome') or rollout or '-'}), retrain {'yes' if rem.get('retrain') else 'no'}: "
                          f"{rem['reason']}")
            if rem.get("serve"):
                console.print(f"  serves after the evaluation: {rem['serve']}"
                              f"{' (filter ' + rem['challengerFilterVersion'] + ')' if rem.get('challengerFilterVersion') else ''}: "
                              f"{rem.get('serveReason') or ''}")
    served = status.get("filter")
    if served:
        console.print(f"  filter in service: {served['version']} ({served.get('gate', 'gated')}) in front of "
                      f"{served.get('wraps') or '-'} since {served['since']}"
                      + (f" (cycle {served['cycle']})" if served.get("cycle") else "")
                      + ("; removing: traffic is clean again" if served.get("removingSince") else ""))
    else:
        console.print("  filter in service: none")
    abstain = spec.get("abstain") or {}
    if abstain.get("enabled"):  # issue 21, item 4 (docs/operator.md, "Abstaining")
        console.print(f"  abstaining below P(correct) {abstain.get('bound', 0.5)} (the model servers follow "
                      "models/<model>/abstain.json; abstained inputs are queued for labeling)")
    history = status.get("history") or []
    if history:
        table = Table(title="history (latest last)")
        for col in ("cycle", "run", "trigger", "offline [interval]", "labels", "decision", "champion", "challenger",
                    "filter remedy", "finished"):
            table.add_column(col)
        for h in history:
            interval = (f"{_fmt(h.get('offlineAccuracy'))} [{_fmt(h.get('offlineLower'))}, "
                        f"{_fmt(h.get('offlineUpper'))}]" if h.get("offlineAccuracy") is not None else "-")
            table.add_row(str(h["cycle"]), h["runName"], f"{h['triggerReason']} {_fmt(h['triggerEstimate'])}",
                          interval, _fmt(h.get("labelsUsed")), h["decision"], _fmt(h.get("championVersion")),
                          _fmt(h.get("challengerVersion")), _remedy_cell(h), h["finishedAt"])
        console.print(table)
    conditions = status.get("conditions") or []
    if conditions:
        console.print("  conditions: " + ", ".join(f"{c['type']}={c['status']}" for c in conditions))
    for ev in events or []:
        console.print(f"  {ev['time']} {ev['type']} {ev['reason']}: {ev['message']}")
