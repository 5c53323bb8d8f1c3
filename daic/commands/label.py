"""``daic label``: serve the labeling page, issue labelers' login links, show progress, export answers."""
from __future__ import annotations

import getpass
import re
from pathlib import Path

import click

from daic.commands.values import BIND_HOST, HTTP_URL, STORE_URL, TEXT, SafePath, number
from daic.labeling.auth import DEFAULT_FILE
from daic.storage import KeyNotFound, StorageError, open_store

_url_option = click.option("--store", "url", default=None, metavar="URL", type=STORE_URL,
                           help="file:///path or s3://bucket/prefix (default: $DAIC_STORE or ./.daic/store)")
_labelers_option = click.option("--labelers", "labelers_path", default=str(DEFAULT_FILE), show_default=True,
                                type=SafePath(dir_okay=False), envvar="DAIC_LABELERS",
                                help="labelers file (names and token hashes; a mounted Secret on a cluster)")


def _default_labeler() -> str:
    try:
        name = re.sub(r"[^A-Za-z0-9._@-]", "-", getpass.getuser())[:64].lstrip("._@-")
    except (KeyError, OSError):
        name = ""
    return name or "labeler"


def _load_labelers(path: str):
    from daic.labeling.auth import Labelers

    try:
        return Labelers.load(Path(path))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group("label")
def command() -> None:
    """Human labeling of a cycle's sampled inputs."""


@command.command("serve")
@_url_option
@_labelers_option
@click.option("--host", default="127.0.0.1", show_default=True, type=BIND_HOST)
@click.option("--port", default=8090, show_default=True, type=click.IntRange(1, 65535))
@click.option("--labeler", default=None, metavar="NAME", type=TEXT,
              help="issue a fresh login link for NAME at start (default: your user name)")
@click.option("--login/--no-login", default=True, show_default=True,
              help="issue and print a login link at start (--no-login: use links from `daic label token`)")
@click.option("--public-url", default=None, metavar="URL", type=HTTP_URL,
              help="the page's address as labelers reach it (login links, allowed Origin); default http://HOST:PORT")
@click.option("--max-body-bytes", default=16 * 1024, show_default=True, type=click.IntRange(256, 1 << 20))
@click.option("--store-timeout", default=10.0, show_default=True, type=number(0.1, 600),
              help="seconds a request waits for the object store before answering 503")
def serve(url: str | None, labelers_path: str, host: str, port: int, labeler: str | None, login: bool,
          public_url: str | None, max_body_bytes: int, store_timeout: float) -> None:
    """Serve the labeling page; prints a login link (with a token) for one labeler."""
    from daic.labeling.app import LabelingConfig, make_app
    from daic.labeling.app import serve as serve_page
    from daic.labeling.auth import login_url

    try:
        store = open_store(url)
    except StorageError as exc:
        raise click.ClickException(str(exc)) from exc
    labelers = _load_labelers(labelers_path)
    base = (public_url or f"http://{host}:{port}").rstrip("/")
    config = LabelingConfig(max_body_bytes=max_body_bytes, store_timeout_s=store_timeout,
                            allowed_origins=(base,) if public_url else (),
                            secure_cookie=base.startswith("https://"))
    click.echo(f"labeling page on {base}/ (answers go to {store.url}; labelers in {labelers.path})")
    if login:
        name = labeler or _default_labeler()
        try:
            token = labelers.issue(name)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--labeler") from exc
        click.echo(f"log in as {name}: {login_url(base, token)}")
    elif not labelers.digests:
        click.echo(f"no labeler can log in yet: run `daic label token NAME --labelers {labelers.path}`")
    serve_page(make_app(store, labelers, config), host, port)


@command.command("token")
@click.argument("name", type=TEXT)
@_labelers_option
@click.option("--url", "base_url", default="http://127.0.0.1:8090", show_default=True, type=HTTP_URL,
              help="the labeling page's address, for the printed login link")
@click.option("--revoke", is_flag=True, help="remove NAME's token instead (its login stops working)")
def token(name: str, labelers_path: str, base_url: str, revoke: bool) -> None:
    """Issue (or replace) NAME's token and print their login link; the page picks it up at once."""
    from daic.labeling.auth import login_url

    labelers = _load_labelers(labelers_path)
    if revoke:
        if not labelers.revoke(name):
            raise click.ClickException(f"no labeler {name!r} in {labelers.path}")
        click.echo(f"revoked {name}")
        return
    try:
        secret = labelers.issue(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from exc
    click.echo(login_url(base_url, secret))


@command.command("progress")
@click.argument("cycle", type=TEXT)
@_url_option
def progress(cycle: str, url: str | None) -> None:
    """How many of CYCLE's sampled inputs are labeled."""
    from daic.labeling import LabelBook

    try:
        answered, total = LabelBook(open_store(url), cycle).progress()
    except (StorageError, KeyNotFound, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{cycle}: {answered} of {total} labeled")


@command.command("export")
@click.argument("cycle", type=TEXT)
@_url_option
def export(cycle: str, url: str | None) -> None:
    """Write CYCLE's answers as a training batch under labels/CYCLE/."""
    from daic.labeling import LabelBook

    try:
        key = LabelBook(open_store(url), cycle).export_batch()
    except (StorageError, KeyNotFound, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(key)
