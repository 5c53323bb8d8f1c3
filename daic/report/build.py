"""Assemble report.html and its PNGs from the store."""
from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from daic.storage import KeyNotFound, ObjectStore

from . import plots
from .cycles import CycleView, list_cycles, load_cycle
from .lineage import lineage_lines
from .timeline import Timeline

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Summary:
    """The five lines the demo prints at the end (and the report's headline)."""

    lines: list[str]


def regained_fraction(before: float, after: float | None, cycles: list[CycleView]) -> tuple[float, float] | None:
    """((after - before) / (clean - before), clean): the share of the drop a promotion won back, with
    clean = the replaced champion's clean test accuracy that evaluate recorded; None without one."""
    clean = next((c.evaluation["champion_clean"] for c in cycles
                  if isinstance(c.evaluation.get("champion_clean"), (int, float))), None)
    if after is None or clean is None or clean <= before:
        return None
    return (after - before) / (clean - before), float(clean)


def summarise(timeline: Timeline, cycles: list[CycleView]) -> Summary:
    pts = [p for p in timeline.points if p.true_accuracy is not None]
    lines = []
    promo = next((e for e in timeline.events if e.kind == "promotion"), None)
    trigger = next((e for e in timeline.events if e.kind == "trigger"), None)
    if pts and trigger is not None:
        before = [p.true_accuracy for p in pts if p.step >= trigger.step - 3 and p.step <= trigger.step]
        after = [p.true_accuracy for p in pts if promo is not None and p.step > promo.step]
        if before:
            line = f"accuracy on drifted traffic before the cycle: {100 * sum(before) / len(before):.1f}%"
            if after:
                line += f", after promotion: {100 * sum(after) / len(after):.1f}%"
            lines.append(line)
            regained = regained_fraction(sum(before) / len(before), sum(after) / len(after) if after else None,
                                         cycles)
            if regained is not None:
                lines.append(f"regained {regained[0]:.2f} of the drop (to the champion's clean accuracy "
                             f"{100 * regained[1]:.1f}%)")
    filter_in = next((e for e in timeline.events if e.kind == "filter-in"), None)
    if pts and filter_in is not None:
        # The filter serves from filter-in until it comes out (at a promotion, or traffic clean again).
        ends = [e.step for e in timeline.events if e.kind in ("filter-out", "promotion") and e.step > filter_in.step]
        end = min(ends) if ends else None
        served = [p.true_accuracy for p in pts if p.step > filter_in.step and (end is None or p.step <= end)]
        if served:
            lines.append(f"with the input filter (0 new labels), steps {filter_in.step + 1}-"
                         f"{end if end is not None else pts[-1].step}: {100 * sum(served) / len(served):.1f}%")
    for e in timeline.events:
        if e.kind == "remedy":
            lines.append(f"remedy at step {e.step}: {e.detail}")
    if trigger is not None:
        p = next((q for q in timeline.points if q.step == trigger.step), None)
        if p is not None and p.estimate is not None:
            truth = f", truth {100 * p.true_accuracy:.1f}%" if p.true_accuracy is not None else ""
            lines.append(f"trigger at step {trigger.step}: online estimate {100 * p.estimate:.1f}%{truth}")
    for c in cycles:
        acc = c.estimate.get("accuracy")
        if acc is not None:
            lines.append(f"cycle {c.cycle}: offline estimate {100 * acc:.1f}% "
                         f"[{100 * c.estimate.get('lower', acc):.1f}, {100 * c.estimate.get('upper', acc):.1f}]")
        if c.labels_used is not None:
            srs = f" (random sampling would need {c.srs_labels} for the same interval)" if c.srs_labels else ""
            lines.append(f"labels spent: {c.labels_used}{srs}")
        if c.decision is not None:
            lines.append(f"decision: {c.decision}")
    return Summary(lines=lines or ["no cycle has run yet"])


def build_report(store: ObjectStore, out_dir: Path, run: str | None = None) -> Path:
    """Write ``out_dir/report.html`` (+ PNGs) for ``run`` (default: the latest run)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run = run or Timeline.latest_run(store)
    try:
        timeline = Timeline.load(store, run)
    except KeyNotFound:
        raise KeyNotFound(f"{store.url}: run {run!r} has no timeline") from None
    cycle_ids = sorted({e.cycle for e in timeline.events if e.cycle} & set(list_cycles(store)))
    cycles = [load_cycle(store, c) for c in cycle_ids]
    figures = {
        "accuracy": plots.accuracy_over_time(timeline, cycles, out_dir),
        "labels": plots.labels_per_cycle(cycles, out_dir),
        "mispredictions": plots.mispredictions_grid(cycles, out_dir),
    }
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    page = env.get_template("report.html").render(
        run=run, timeline=timeline, cycles=cycles, figures=figures, summary=summarise(timeline, cycles),
        lineage=lineage_lines(store, timeline.deployment), store_url=store.url,
        generated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    )
    path = out_dir / "report.html"
    path.write_text(page)
    return path


__all__ = ["build_report", "summarise", "Summary", "html"]
