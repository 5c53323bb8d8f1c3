"""``daic oracle``: run the pseudo-oracle sidecar, read its estimate and its records."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from daic.commands.values import (
    BIND_HOST,
    DEPLOYMENT,
    HTTP_URL,
    MODEL_NAME,
    STORE_URL,
    TEXT,
    SafePath,
    count,
    invalid_fields,
    number,
)


@click.group("oracle")
def command() -> None:
    """The pseudo-oracle sidecar (serve) and what it wrote."""


@command.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, type=BIND_HOST)
@click.option("--port", default=8300, show_default=True, type=click.IntRange(0, 65535),
              help="Service port: estimate, metrics, health (and feedback with the token)")
@click.option("--ingest-port", default=8301, show_default=True, type=click.IntRange(0, 65535),
              help="events, feedback and admin, on 127.0.0.1 only (the request logger's URL)")
@click.option("--feedback-token-file", default=None, type=SafePath(dir_okay=False, path_type=Path),
              help="a file holding the bearer token that feedback on the Service port needs (a Secret)")
@click.option("--store", "store_url", default=None, metavar="URL", type=STORE_URL,
              help="file:///path or s3://bucket/prefix (default: $DAIC_STORE or ./.daic/store)")
@click.option("--deployment", default="mnist", show_default=True, type=DEPLOYMENT,
              help="records go to operational/<deployment>/")
@click.option("--model-name", default="mnist", show_default=True, type=MODEL_NAME, help="registry name to follow")
@click.option("--state-dir", default=".daic/sidecar", show_default=True, type=SafePath(file_okay=False, path_type=Path),
              help="write-ahead log and checkpoint (an emptyDir in a pod)")
@click.option("--max-queue", default=20_000, show_default=True, type=count(1),
              help="events waiting to be scored above which new ones get 503")
@click.option("--join-timeout", "join_timeout_s", default=30.0, show_default=True, type=number(0, 3600, min_open=True))
@click.option("--batch-rows", default=1024, show_default=True, type=count(1, 1_000_000), help="inputs per stored batch")
@click.option("--flush-interval", "flush_interval_s", default=10.0, show_default=True, type=number(0, 86_400, min_open=True))
@click.option("--window", default=1000, show_default=True, type=count(1, 10_000_000), help="inputs in the estimate's window")
@click.option("--reference-check", "reference_check_s", default=10.0, show_default=True, type=number(0, 86_400, min_open=True),
              help="seconds between checks of the champion pointer")
@click.option("--drain-quiet", "drain_quiet_s", default=2.0, show_default=True, type=number(0, 3600),
              help="on SIGTERM, keep taking events until none came for this long (seconds)")
@click.option("--drain-max", "drain_max_s", default=20.0, show_default=True, type=number(0, 3600),
              help="on SIGTERM, take events for at most this long (seconds)")
@click.option("--graph", default=None, metavar="JSON", type=TEXT,
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
        raise invalid_fields(exc) from None
    from daic.sidecar.app import read_token, run

    try:
        read_token(config.feedback_token_file)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--feedback-token-file") from None
    run(config)


@command.command("estimate")
@click.option("--url", default="http://127.0.0.1:8300", show_default=True, type=HTTP_URL, help="the sidecar")
def estimate(url: str) -> None:
    """Print the sidecar's current estimate (GET /estimate) as JSON."""
    import requests

    from daic.serving import http_client

    try:
        response = http_client.send(None, "GET", url.rstrip("/") + "/estimate", timeout_s=10,
                                    max_bytes=http_client.SMALL_ANSWER_BYTES)
    except requests.RequestException as exc:
        raise click.ClickException(f"cannot reach the sidecar at {url}: {exc}") from None
    if response.status_code != 200:
        raise click.ClickException(f"{url}/estimate answered {response.status_code}: {response.text[:200]}")
    click.echo(json.dumps(response.json(), indent=2))


@command.command("records")
@click.option("--store", "store_url", default=None, metavar="URL", type=STORE_URL)
@click.option("--deployment", default="mnist", show_default=True, type=DEPLOYMENT)
@click.option("--since", type=number(0), default=None, help="Unix seconds")
@click.option("--until", type=number(0), default=None, help="Unix seconds")
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
@click.option("--store", "store_url", default=None, metavar="URL", type=STORE_URL)
@click.option("--deployment", default="mnist", show_default=True, type=DEPLOYMENT)
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
