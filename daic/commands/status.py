"""``daic status``: show a local AssessmentCycle's status (what ``daic controller`` writes)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from daic.commands.values import SafePath, count


def _state_dir(cycle_path: str | None, state_dir: str | None) -> Path:
    if state_dir:
        return Path(state_dir)
    from daic.operators.local_controller import CycleFileError, read_cycle_file

    try:
        name = read_cycle_file(Path(cycle_path)).name  # type: ignore[arg-type]
    except CycleFileError as exc:
        raise click.BadParameter(str(exc), param_hint="--cycle") from exc
    candidates = state_dirs(Path(cycle_path), name)  # type: ignore[arg-type]
    found = [d for d in candidates if _status_names(d, name)]
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
    """``root/status.json`` exists and is the status of cycle ``name``."""
    try:
        doc = json.loads((root / "status.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and (doc.get("metadata") or {}).get("name") == name


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
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise click.ClickException(f"{path} does not exist: has `daic controller` run for this cycle?") from None
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    from daic.operators.status_view import render

    lines = []
    log = root / "events.jsonl"
    if events and log.exists():
        lines = [json.loads(line) for line in log.read_text().splitlines()[-events:] if line.strip()]
    render(doc, lines)
