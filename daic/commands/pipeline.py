"""``daic pipeline``: compile the assess-and-improve pipeline, run it locally (kfp.local), submit a
run to Kubeflow, or upload it there as a named version.

Parameters are given as ``-p name=value`` (values read as YAML, so ``-p budget=300``,
``-p train_node_selector='{gpu: a100}'``); ``daic pipeline params`` lists them with defaults.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import click

from daic.commands.values import DNS_LABEL, HTTP_URL, NONEMPTY, STORE_URL, TEXT, SafePath


def _coerce(name: str, raw: str, default: Any) -> Any:
    """``raw`` typed like the parameter's ``default``: a string as typed (JSON specs, times, URLs:
    not read as YAML, so ``{`` or ``a: b`` are kept), anything else read as YAML and checked.
    Numbers must be finite; whole numbers are counts, seeds, limits or seconds (never negative,
    at most MAX_COUNT: past int64 the KFP protobufs overflow)."""
    import math

    import yaml

    from daic.commands.values import MAX_COUNT

    def bad(why: str) -> click.BadParameter:
        return click.BadParameter(f"{name} {why}, got {raw[:80]!r}", param_hint="'--param'")

    if "\x00" in raw:
        raise bad("must not contain a NUL byte")
    if isinstance(default, str):
        if name in ("cycle_id", "run_name") and raw:
            from daic.sampling.record import check_cycle

            try:
                check_cycle(raw)
            except ValueError as exc:
                raise bad(f"is not a cycle id ({exc})") from None
        return raw
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise bad(f"cannot be read as YAML ({str(exc).splitlines()[0]})") from None
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise bad("must be a finite number")
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and not 0 <= value <= MAX_COUNT:
            raise bad(f"must be a whole number from 0 to {MAX_COUNT}")
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = True
    if not ok:
        raise bad(f"must be a {type(default).__name__}")
    return value


def parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``name=value`` pairs, typed by each parameter's default; unknown names are refused."""
    from daic.pipelines.local_run import pipeline_parameters

    known = pipeline_parameters()
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair[:80]!r} is not name=value", param_hint="'--param'")
        if name not in known:
            raise click.BadParameter(f"unknown parameter {name[:80]!r}; see 'daic pipeline params'",
                                     param_hint="'--param'")
        params[name] = _coerce(name, raw, known[name])
    return params


_param_option = click.option("-p", "--param", "pairs", multiple=True, metavar="NAME=VALUE",
                             help="a pipeline parameter (repeatable)")


_host_option = click.option("--host", required=True, metavar="URL", type=HTTP_URL,
                            help="Kubeflow Pipelines API, e.g. http://localhost:8888")


@contextmanager
def _kubeflow_errors(host: str) -> Iterator[None]:
    """Kubeflow Pipelines unreachable, timing out or answering an error status: one line naming the
    host and what it said, not a traceback (every request is bounded: daic.pipelines.kfp_client)."""
    from daic.pipelines.kfp_client import describe_failure

    try:
        yield
    except Exception as exc:  # noqa: BLE001 - anything else re-raises with its traceback
        message = describe_failure(host, exc)
        if message is None:
            raise
        raise click.ClickException(message) from exc


@click.group("pipeline")
def command() -> None:
    """Compile, run (kfp.local), submit or upload the assess-and-improve pipeline."""


@command.command("params")
def params_cmd() -> None:
    """List the pipeline's parameters and their defaults."""
    from daic.pipelines.local_run import pipeline_parameters

    for name, default in pipeline_parameters().items():
        click.echo(f"{name:24s} {type(default).__name__:6s} {json.dumps(default)}")


@command.command("compile")
@click.option("--out-dir", type=SafePath(file_okay=False, path_type=Path), default=None,
              help="where to write the YAML (default: the package's compiled/)")
def compile_cmd(out_dir: Path | None) -> None:
    """Compile to YAML (what make compile-pipelines does)."""
    from daic.pipelines.compile import COMPILED, TARGETS, compile_pipeline

    for filename, ref in TARGETS.items():
        click.echo(compile_pipeline((out_dir or COMPILED) / filename, ref))


@command.command("run")
@_param_option
@click.option("--store", "store_url", default=None, metavar="URL", type=STORE_URL, help="object store (default: $DAIC_STORE or ./.daic/store)")
@click.option("--pipeline-root", type=SafePath(file_okay=False), default=None,
              help="where kfp.local keeps step outputs (default ./.daic/kfp-local)")
def run_cmd(pairs: tuple[str, ...], store_url: str | None, pipeline_root: str | None) -> None:
    """Run the whole pipeline on this machine with kfp.local; print the result record."""
    import logging

    from daic.pipelines.local_run import run_pipeline

    params = parse_params(pairs)
    if store_url:
        params["store_url"] = store_url
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = run_pipeline(params, pipeline_root=pipeline_root)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(result, indent=2, sort_keys=True))


@command.command("submit")
@_param_option
@_host_option
@click.option("--experiment", default="daic", show_default=True, type=NONEMPTY)
@click.option("--run-name", default=None, type=NONEMPTY, help="default: the cycle id")
@click.option("--package", type=SafePath(exists=True, dir_okay=False), default=None,
              help="compiled YAML (default: the package's compiled assess_and_improve.yaml)")
@click.option("--namespace", "kfp_namespace", default=None, type=DNS_LABEL, help="Kubeflow profile namespace (multi-user installs)")
def submit_cmd(pairs: tuple[str, ...], host: str, experiment: str, run_name: str | None, package: str | None,
               kfp_namespace: str | None) -> None:
    """Submit a run to Kubeflow Pipelines with kfp.Client; print the run id."""
    from daic.pipelines.submit import submit

    params = parse_params(pairs)
    with _kubeflow_errors(host):
        run_id = submit(host, params, experiment=experiment, run_name=run_name, package=package,
                        namespace=kfp_namespace)
    click.echo(run_id)


@command.command("upload")
@_host_option
@click.option("--package", type=SafePath(dir_okay=False, path_type=Path), default=None,
              help="compiled YAML (default: the package's compiled assess_and_improve.yaml)")
@click.option("--name", default="assess-and-improve", show_default=True, type=NONEMPTY, help="pipeline name in Kubeflow")
@click.option("--version", "version", default=None, metavar="VERSION", type=NONEMPTY,
              help="pipeline version name (default: daic's release, e.g. 0.1.0)")
@click.option("--description", default="", type=TEXT, help="shown in the Kubeflow UI")
@click.option("--namespace", "kfp_namespace", default=None, type=DNS_LABEL, help="Kubeflow profile namespace (multi-user installs)")
def upload_cmd(host: str, package: Path | None, name: str, version: str | None, description: str,
               kfp_namespace: str | None) -> None:
    """Upload the compiled pipeline as version VERSION of NAME; does nothing if that version exists."""
    from daic import __version__
    from daic.pipelines.upload import upload

    version = version or __version__
    if package is not None and not package.is_file():
        raise click.BadParameter(f"{package} does not exist", param_hint="--package")
    try:
        with _kubeflow_errors(host):
            result = upload(host, package, name, version, description=description, namespace=kfp_namespace)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--package") from exc
    if result.created_version:
        click.echo(f"uploaded {name} version {version} (pipeline {result.pipeline_id}, "
                   f"version {result.version_id})")
    else:
        click.echo(f"{name} version {version} exists already (pipeline {result.pipeline_id}, "
                   f"version {result.version_id}): nothing uploaded")
        if result.differs:
            click.echo(f"warning: the stored {name} {version} differs from {package or 'the compiled package'}; "
                       "a version is immutable, upload this one under a new --version", err=True)
