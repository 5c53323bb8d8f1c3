"""``daic status``: show a local AssessmentCycle's status (what ``daic controller`` writes)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import click
from pydantic import BaseModel, ConfigDict, Field

from daic.commands.values import SafePath, count
from daic.storage.parsed import CorruptObject, load_json_file, parse_value


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Metadata(_Open):
    name: str


class _DeploymentRef(_Open):
    name: str = "?"


class _Abstain(_Open):
    enabled: bool = False
    bound: float = 0.5


class _SpecShown(_Open):
    """The parts of the cycle's spec the status view shows (the controller validated the rest)."""

    deployment: Optional[_DeploymentRef] = None
    abstain: Optional[_Abstain] = None


def _status_model():
    from daic.operators.status import CycleStatus

    class StatusFile(_Open):
        """``<state-dir>/status.json`` as ``daic controller`` writes it (LocalController.step)."""

        metadata: _Metadata
        spec: _SpecShown = Field(default_factory=_SpecShown)
        status: CycleStatus = Field(default_factory=CycleStatus)

    return StatusFile


class _Event(BaseModel):
    """One line of ``events.jsonl`` (operators.local_controller.FileEvents)."""

    time: str
    type: str
    reason: str
    message: str


def read_status_file(path: Path) -> dict[str, Any]:
    """``status.json`` checked against what the view reads (metadata.name, the spec's deployment
    and abstain, a CycleStatus), as the dict the view renders; a ClickException naming the file
    and the field otherwise (an empty, truncated or hand-edited file was an AttributeError or a
    JSONDecodeError traceback)."""
    try:
        doc = load_json_file(path, _status_model())
    except FileNotFoundError:
        raise click.ClickException(f"{path} does not exist: has `daic controller` run for this cycle?") from None
    except CorruptObject as exc:
        raise click.ClickException(f"{exc}; `daic controller` rewrites it on its next pass "
                                   "(or move it aside to start this cycle's state afresh)") from None
    return {**doc.model_dump(mode="json", exclude={"spec", "status"}),
            "spec": doc.spec.model_dump(mode="json"), "status": doc.status.to_wire()}


def read_events(path: Path, last: int) -> tuple[list[dict[str, Any]], int]:
    """The last ``last`` events of ``events.jsonl`` and how many of those lines were unreadable
    (skipped: the log is appended line by line, so a killed controller can leave a torn line,
    and the status is worth showing without it)."""
    if not last or not path.exists():
        return [], 0
    shown, skipped = [], 0
    for line in path.read_text(errors="replace").splitlines()[-last:]:
        if not line.strip():
            continue
        try:
            shown.append(parse_value(str(path), _Event, json.loads(line)).model_dump())
        except (ValueError, CorruptObject):
            skipped += 1
    return shown, skipped


def _state_dir(cycle_path: str | None, state_dir: str | None) -> Path:
    if state_dir:
        return Path(state_dir)
    from daic.operators.local_controller import CycleFileError, read_cycle_file

    try:
        name = read_cycle_file(Path(cycle_path)).name  # type: ignore[arg-type]
    except CycleFileError as exc:
        raise click.BadParameter(str(exc), param_hint="--cycle") from exc
    candidates = state_dirs(Path(cycle_path), name)  # type: ignore[arg-type]
    found, unreadable = [], []
    for d in candidates:
        try:
            if _status_names(d, name):
                found.append(d)
        except click.ClickException as exc:
            unreadable.append(exc)
    if not found and unreadable:
        raise unreadable[0]
    if not found:
        raise click.ClickException(
            f"no controller state for cycle {name!r}: looked in " + ", ".join(str(d) for d in candidates)
            + "; has `daic controller` run for this cycle? (give its --state-dir if it was another)")
    return max(found, key=lambda d: (d / "status.json").stat().st_mtime)


def state_dirs(cycle_path: Path, name: str) -> list[Path]:
    """Where ``daic controller --cycle FILE`` may have written the state of cycle ``name``: its
    default ``.daic/controller/<name>`` (from the working directory, or beside the cycle file),
    and ``controller/`` beside the cycle file, which is where ``daic demo`` puts it
    (``<work-dir>/<run>/cycle.yaml`` and ``<work-dir>/<run>/controller/``)."""
    here = cycle_path.resolve().parent
    out: list[Path] = []
    for d in (Path(".daic") / "controller" / name, here / ".daic" / "controller" / name, here / "controller"):
        if all(d.resolve() != o.resolve() for o in out):
            out.append(d)
    return out


def _status_names(root: Path, name: str) -> bool:
    """``root/status.json`` exists and is the status of cycle ``name`` (a ClickException naming
    the file when it exists but cannot be read as a status)."""
    if not (root / "status.json").is_file():
        return False
    return read_status_file(root / "status.json")["metadata"]["name"] == name


@click.command("status")
@click.option("--cycle", "cycle_path", default=None, type=SafePath(dir_okay=False),
              help="the AssessmentCycle YAML given to `daic controller`")
@click.option("--state-dir", default=None, type=SafePath(file_okay=False),
              help="the controller's --state-dir (instead of --cycle)")
@click.option("--json", "as_json", is_flag=True, help="print the raw status JSON")
@click.option("--events", default=5, show_default=True, type=count(0, 10_000), help="recent events to show")
def command(cycle_path: str | None, state_dir: str | None, as_json: bool, events: int) -> None:
    """Show phase, estimate, the cycle in flight and the history of a local AssessmentCycle."""
    if not cycle_path and not state_dir:
        raise click.UsageError("give --cycle FILE or --state-dir DIR")
    root = _state_dir(cycle_path, state_dir)
    path = root / "status.json"
    doc = read_status_file(path)
    if as_json:
        click.echo(json.dumps(json.loads(path.read_text()), indent=2, sort_keys=True))
        return
    from daic.operators.status_view import render

    lines, skipped = read_events(root / "events.jsonl", events)
    render(doc, lines)
    if skipped:
        click.echo(f"  ({skipped} unreadable line(s) of {root / 'events.jsonl'} skipped)")
