"""``python -m daic.deploy``: the manifest and image checks, for CI or before ``kubectl apply``.

    python -m daic.deploy check manifests/overlays/gpu [manifests/overlays/dev ...]
    python -m daic.deploy lint-images images/

Prints one line per problem and exits 1 if there is any.
"""
from __future__ import annotations

from pathlib import Path

import click

from daic.deploy.check import USER_CREATED, check_objects
from daic.deploy.dockerfile import lint
from daic.deploy.render import RenderError, kustomize

@click.group()
def main() -> None:
    """Offline checks of daic's Kubernetes manifests and Dockerfiles."""


@main.command("check")
@click.argument("kustomizations", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
def check(kustomizations: tuple[str, ...]) -> None:
    """Render each KUSTOMIZATION with kubectl kustomize and check every object."""
    failed = False
    for path in kustomizations:
        try:
            objects = kustomize(path)
        except RenderError as exc:
            raise click.ClickException(str(exc)) from exc
        problems = check_objects(objects, external=USER_CREATED)
        for p in problems:
            click.echo(f"{path}: {p}")
        click.echo(f"{path}: {len(objects)} objects, {len(problems)} problem(s)", err=True)
        failed |= bool(problems)
    if failed:
        raise SystemExit(1)


@main.command("lint-images")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--locks", default="requirements", show_default=True, type=click.Path(file_okay=False),
              help="folder holding the lock files the Dockerfiles must use")
def lint_images(folder: str, locks: str) -> None:
    """Lint every FOLDER/*/Dockerfile."""
    files = sorted(Path(folder).glob("*/Dockerfile"))
    if not files:
        raise click.ClickException(f"no */Dockerfile under {folder}")
    problems = [p for f in files for p in lint(f, locks)]
    for p in problems:
        click.echo(str(p))
    click.echo(f"{len(files)} Dockerfile(s), {len(problems)} problem(s)", err=True)
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
