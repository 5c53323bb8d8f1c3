"""``daic serve``: the model server, the sidecar and the gateway on this machine; and
``daic serve manifest``: the SeldonDeployment for a cluster."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import click

from daic.commands.values import (
    BIND_HOST,
    DEPLOYMENT,
    DNS_LABEL,
    MODEL_NAME,
    PORT,
    SERVED_VERSION,
    STORE_URL,
    TEXT,
    VERSION,
    SafePath,
    count,
    invalid_fields,
    number,
)


@click.group("serve", invoke_without_command=True)
@click.option("--store", "store_url", default=None, metavar="URL", type=STORE_URL,
              help="file:///path or s3://bucket/prefix (default: $DAIC_STORE or ./.daic/store)")
@click.option("--model-name", default="mnist", show_default=True, type=MODEL_NAME)
@click.option("--model-version", default="champion", show_default=True, type=SERVED_VERSION,
              help="'champion' follows the registry pointer with live reload; or pin a version")
@click.option("--deployment", default="mnist", show_default=True, type=DEPLOYMENT, help="records go to operational/<deployment>/")
@click.option("--host", default="127.0.0.1", show_default=True, type=BIND_HOST)
@click.option("--gateway-port", default=8003, show_default=True, type=PORT)
@click.option("--model-port", default=9000, show_default=True, type=PORT)
@click.option("--metrics-port", "model_metrics_port", default=6000, show_default=True, type=PORT)
@click.option("--sidecar-port", default=8300, show_default=True, type=PORT)
@click.option("--no-sidecar", is_flag=True, help="serve without the pseudo-oracle sidecar")
@click.option("--threads", default=4, show_default=True, type=count(1, 256), help="gunicorn threads of the model server")
@click.option("--reload-interval", "reload_interval_s", default=15.0, show_default=True, type=number(0, 86_400, min_open=True),
              help="seconds between checks of the champion pointer")
@click.option("--state-dir", default=".daic/sidecar", show_default=True, type=SafePath(file_okay=False, path_type=Path))
@click.option("--log-dir", default=".daic/logs", show_default=True, type=SafePath(file_okay=False, path_type=Path))
@click.pass_context
def command(ctx: click.Context, no_sidecar: bool, **options) -> None:
    """Run the model server, sidecar and gateway locally until Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    from daic.serving.stack import LocalStack, StackConfig, StackError

    try:
        config = StackConfig(with_sidecar=not no_sidecar, **options)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    stop = {"now": False}

    def _request_stop(signum, frame):  # noqa: ARG001 - signal handler signature
        stop["now"] = True

    previous = {s: signal.signal(s, _request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    stack = LocalStack(config)
    try:
        click.echo("starting model server, sidecar and gateway ...", err=True)
        try:
            stack.start()
        except StackError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"predictions: POST {config.gateway_url}/api/v1.0/predictions")
        click.echo(f"feedback:    POST {config.gateway_url}/api/v1.0/feedback")
        if config.with_sidecar:
            click.echo(f"estimate:    GET  {config.sidecar_url}/estimate    metrics: GET {config.sidecar_url}/metrics")
        click.echo(f"logs in {config.log_dir}/; Ctrl-C to stop", err=True)
        while not stop["now"]:
            dead = {name: code for name, code in stack.poll().items() if code is not None}
            if dead:
                raise click.ClickException(f"stopped because a component exited: {dead}; see {config.log_dir}/")
            time.sleep(0.5)
    finally:
        codes = stack.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
        if codes:
            click.echo(f"stopped: {codes}", err=True)


@command.command("manifest")
@click.option("--name", default="mnist", show_default=True, type=TEXT)
@click.option("--namespace", default=None, type=DNS_LABEL)
@click.option("--store", "store_url", default="s3://daic", show_default=True, type=STORE_URL)
@click.option("--store-secret", default="daic-store", show_default=True, type=TEXT)
@click.option("--model-name", default="mnist", show_default=True, type=MODEL_NAME)
@click.option("--model-version", default="champion", show_default=True, type=SERVED_VERSION)
@click.option("--model-image", default=None, type=TEXT, help="default: this release's daic-serving image")
@click.option("--sidecar-image", default=None, type=TEXT, help="default: this release's daic-oracle image")
@click.option("--replicas", default=1, show_default=True, type=count(1, 1000))
@click.option("--canary-version", default=None, type=VERSION, help="add a canary predictor pinned to this version")
@click.option("--canary-traffic", default=10, show_default=True, type=click.IntRange(1, 99), help="percent to the canary")
@click.option("--out", type=SafePath(dir_okay=False, path_type=Path), default=None, help="file (default: stdout)")
def manifest(canary_version: str | None, canary_traffic: int, out: Path | None, **options) -> None:
    """Render the SeldonDeployment (model server + sidecar) as YAML."""
    from pydantic import ValidationError

    from daic.serving.manifest import (
        DeploymentParams,
        render_canary_deployment,
        render_seldon_deployment,
        to_yaml,
    )

    try:
        params = DeploymentParams(**{k: v for k, v in options.items() if v is not None})
        doc = (render_canary_deployment(params, canary_version, canary_traffic) if canary_version
               else render_seldon_deployment(params))
    except ValidationError as exc:
        raise invalid_fields(exc) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    text = to_yaml(doc)
    if out is None:
        click.echo(text, nl=False)
    else:
        header = f"# Rendered by: daic serve manifest --out {out} (do not edit by hand)\n"
        out.write_text(header + text)
        click.echo(f"wrote {out}", err=True)
