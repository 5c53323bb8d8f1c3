"""``daic controller``: run the AssessmentCycle reconcile loop on this machine (see docs/operator.md)."""
from __future__ import annotations

import logging
import signal
import threading

import click

from daic.commands.values import STORE_URL, TEXT, SafePath, count, number


@click.command("controller")
@click.option("--cycle", "cycle_path", required=True, type=SafePath(dir_okay=False),
              help="AssessmentCycle YAML (the same resource you would kubectl apply)")
@click.option("--state-dir", default=None, type=SafePath(file_okay=False),
              help="where status.json, runs/ and events.jsonl live (default .daic/controller/<name>)")
@click.option("--store", "store_url", default=None, metavar="URL", type=STORE_URL,
              help="object store for cycle records (default: $DAIC_STORE or ./.daic/store)")
@click.option("--pipeline-callable", default="daic.pipelines.local_run:run_pipeline", show_default=True, type=TEXT,
              metavar="MODULE:FUNC", help="what a local run executes: f(params) -> result dict")
@click.option("--champion-switch", default="registry", show_default=True, type=TEXT, metavar="registry|none|MODULE:FUNC",
              help="when a version takes all traffic: move the model registry's champion pointer (which "
                   "the local model server follows), do nothing beyond <state-dir>/deployment.json, or "
                   "call f(model_name, version)")
@click.option("--interval", default=5.0, show_default=True, type=number(0.01, 86_400),
              help="seconds between reconcile passes")
@click.option("--passes", default=None, type=count(1), help="stop after this many passes")
@click.option("--exit-after-cycles", default=None, type=count(1),
              help="stop once this many cycles are in the history (and their records written)")
@click.option("-v", "--verbose", is_flag=True, help="log adapter details")
def command(cycle_path: str, state_dir: str | None, store_url: str | None, pipeline_callable: str,
            champion_switch: str, interval: float, passes: int | None, exit_after_cycles: int | None,
            verbose: bool) -> None:
    """Run the AssessmentCycle reconcile loop locally; status goes to <state-dir>/status.json."""
    from daic.operators.local_controller import ControllerBusy, CycleFileError, LocalController
    from daic.operators.runners.local_worker import load_callable

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if ":" not in pipeline_callable:
        raise click.BadParameter(f"{pipeline_callable!r} must look like module:function or /path/file.py:function",
                                 param_hint="--pipeline-callable")
    from daic.operators.local_deployment import registry_champion_hook

    hook = None
    if champion_switch == "registry":
        hook = registry_champion_hook(store_url)
    elif champion_switch != "none":
        try:
            hook = load_callable(champion_switch)
        except (ImportError, ValueError, OSError) as exc:
            raise click.BadParameter(str(exc), param_hint="--champion-switch") from exc
    try:
        controller = LocalController(cycle_path, state_dir, store_url, pipeline_callable, hook,
                                     echo=lambda line: click.echo(line, err=True))
    except CycleFileError as exc:
        raise click.BadParameter(str(exc), param_hint="--cycle") from exc
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(f"controller: {cycle_path} -> {controller.status_path}", err=True)
    try:
        status = controller.run(interval=interval, passes=passes, exit_after_cycles=exit_after_cycles, stop=stop)
    except (CycleFileError, ControllerBusy) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"controller stopped: phase {status.phase.value}, {len(status.history)} cycle(s) in history",
               err=True)
