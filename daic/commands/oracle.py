"""``daic oracle``: run the pseudo-oracle sidecar, read its estimate and its records."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import click


@click.group("oracle")
def command() -> None:
    """The pseudo-oracle sidecar (serve) and what it wrote."""


@command.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8300, show_default=True, type=int,
              help="Service port: estimate, metrics, health (and feedback with the token)")
@click.option("--ingest-port", default=8301, show_default=True, type=int,
              help="events, feedback and admin, on 127.0.0.1 only (the request logger's URL)")
@click.option("--feedback-token-file", default=None, type=click.Path(path_type=Path),
              help="a file holding the bearer token that feedback on the Service port needs (a Secret)")
@click.option("--store", "store_url", default=None, metavar="URL",
              help="file:///path or s3://bucket/prefix (default: $DAIC_STORE or ./.daic/store)")
@click.option("--deployment", default="mnist", show_default=True,
              help="records go to operational/<deployment>/")
@click.option("--model-name", default="mnist", show_default=True, help="registry name to follow")
@click.option("--state-dir", default=".daic/sidecar", show_default=True, type=click.Path(path_type=Path),
              help="write-ahead log and checkpoint (an emptyDir in a pod)")
@click.option("--max-queue", default=20_000, show_default=True, type=int,
              help="events waiting to be scored above which new ones get 503")
@click.option("--join-timeout", "join_timeout_s", default=30.0, show_default=True, type=float)
@click.option("--batch-rows", default=1024, show_default=True, type=int, help="inputs per stored batch")
@click.option("--flush-interval", "flush_interval_s", default=10.0, show_default=True, type=float)
@click.option("--window", default=1000, show_default=True, type=int, help="inputs in the estimate's window")
@click.option("--reference-check", "reference_check_s", default=10.0, show_default=True, type=float,
              help="seconds between checks of the champion pointer")
@click.option("--drain-quiet", "drain_quiet_s", default=2.0, show_default=True, type=float,
              help="on SIGTERM, keep taking events until none came for this long (seconds)")
@click.option("--drain-max", "drain_max_s", default=20.0, show_default=True, type=float,
              help="on SIGTERM, take events for at most this long (seconds)")
@click.option("--graph", default=None, metavar="JSON",
              help="the predictor's Seldon inference graph as JSON (as daic.serving.manifest renders it); "
                   "default: one MODEL node named classifier")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def serve(log_level: str, graph: str | None, **options) -> None:
    """Receive Seldon's request-logger CloudEvents, estimate accuracy online, log operational
    records. Runs until SIGINT/SIGTERM, then writes everything accepted to the store."""
    from pydantic import ValidationError

    from daic.sidecar.config import SidecarConfig

    logging.basicConfig(level=log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if graph is not None:
        try:
            options["graph"] = json.loads(graph)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--graph") from None
    try:
        config = SidecarConfig(**options)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = str(first["loc"][0]) if first["loc"] else "port"
        raise click.BadParameter(first["msg"], param_hint=f"--{where.replace('_', '-')}") from None
    from daic.sidecar.app import read_token, run

    try:
        read_token(config.feedback_token_file)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--feedback-token-file") from None
    run(config)


@command.command("estimate")
@click.option("--url", default="http://127.0.0.1:8300", show_default=True, help="the sidecar")
def estimate(url: str) -> None:
    """Print the sidecar's current estimate (GET /estimate) as JSON."""
    import requests

    try:
        response = requests.get(url.rstrip("/") + "/estimate", timeout=10)
    except requests.RequestException as exc:
        raise click.ClickException(f"cannot reach the sidecar at {url}: {exc}") from None
    if response.status_code != 200:
        raise click.ClickException(f"{url}/estimate answered {response.status_code}: {response.text[:200]}")
    click.echo(json.dumps(response.json(), indent=2))


@command.command("records")
@click.option("--store", "store_url", default=None, metavar="URL")
@click.option("--deployment", default="mnist", show_default=True)
@click.option("--since", type=float, default=None, help="Unix seconds")
@click.option("--until", type=float, default=None, help="Unix seconds")
def records(store_url: str | None, deployment: str, since: float | None, until: float | None) -> None:
    """Summarise the operational records logged for DEPLOYMENT."""
    import numpy as np

    from daic.sidecar.records import read_operational
    from daic.storage import StorageError, open_store

    try:
        recs = read_operational(open_store(store_url), deployment, since=since, until=until)
    except (StorageError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{len(recs)} input(s) in operational/{deployment}/")
    for version in sorted(set(recs.model_version.tolist())):
        sel = recs.model_version == version
        p = recs.p_correct[sel]
        click.echo(f"  {version}: {int(sel.sum())} inputs, mean P(correct) "
                   f"{float(np.nanmean(p)) if np.isfinite(p).any() else float('nan'):.3f}, "
                   f"mean drift {float(np.nanmean(recs.drift[sel])) if np.isfinite(recs.drift[sel]).any() else float('nan'):.3f}")


@command.command("convert-records")
@click.option("--store", "store_url", default=None, metavar="URL")
@click.option("--deployment", default="mnist", show_default=True)
@click.option("--keep", is_flag=True, help="keep the .npz batches after writing their Parquet parts")
def convert_records(store_url: str | None, deployment: str, keep: bool) -> None:
    """Rewrite DEPLOYMENT's old .npz batches as Parquet parts (safe to re-run)."""
    from daic.sidecar.records import convert_npz_batches
    from daic.storage import StorageError, open_store

    try:
        done = convert_npz_batches(open_store(store_url), deployment, delete=not keep)
    except (StorageError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    for key, parts in done:
        click.echo(f"{key} -> {', '.join(parts) or '(empty)'}")
    click.echo(f"{len(done)} batch(es) converted")
