"""``daic store``: look inside the object store, or start a local S3 server to try s3:// with."""
from __future__ import annotations

import json
import sys

import click

from daic.commands.values import BUCKET, KEY, KEY_PREFIX, STORE_URL
from daic.storage import StorageError, default_url, open_store

_url_option = click.option("--store", "url", default=None, metavar="URL", type=STORE_URL,
                           help="file:///path or s3://bucket/prefix (default: $DAIC_STORE or ./.daic/store)")


@click.group("store")
def command() -> None:
    """Look inside the object store."""


@command.command("ls")
@click.argument("prefix", default="", type=KEY_PREFIX)
@_url_option
def ls(prefix: str, url: str | None) -> None:
    """List keys under PREFIX."""
    try:
        store = open_store(url)
        keys = store.list(prefix)
    except StorageError as exc:
        raise click.ClickException(str(exc)) from exc
    for key in keys:
        click.echo(key)
    click.echo(f"{len(keys)} object(s) under {prefix or '/'} in {store.url}", err=True)


@command.command("cat")
@click.argument("key", type=KEY)
@_url_option
def cat(key: str, url: str | None) -> None:
    """Print one object (JSON pretty-printed, npz summarised)."""
    try:
        store = open_store(url)
        if key.endswith(".npz"):
            for name, arr in store.get_arrays(key).items():
                click.echo(f"{name}: shape={arr.shape} dtype={arr.dtype}")
        elif key.endswith(".json") or "." not in key.rsplit("/", 1)[-1]:
            raw = store.get_bytes(key)
            try:
                click.echo(json.dumps(json.loads(raw), indent=2))
            except ValueError:
                sys.stdout.buffer.write(raw)
        else:
            sys.stdout.buffer.write(store.get_bytes(key))
    except (StorageError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


@command.command("s3-server")
@click.option("--bucket", default="daic", show_default=True, type=BUCKET)
def s3_server(bucket: str) -> None:
    """Run a local SeaweedFS S3 server until Ctrl-C, printing the environment to use it."""
    from daic.storage.seaweedfs import SeaweedS3

    with SeaweedS3() as server:
        env = server.env()
        import os

        os.environ.update(env)
        open_store(f"s3://{bucket}", create_bucket=True)
        for name, value in env.items():
            click.echo(f"export {name}={value}")
        click.echo(f"export DAIC_STORE=s3://{bucket}")
        click.echo("S3 server running; Ctrl-C to stop.", err=True)
        try:
            import signal

            signal.pause()
        except KeyboardInterrupt:
            pass


@command.command("where")
def where() -> None:
    """Print the store URL that commands use by default."""
    click.echo(default_url())
