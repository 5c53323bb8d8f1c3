"""The ``daic`` command.

Each subcommand lives in its own module under ``daic.commands`` and exposes a click object named
``command``; this file only assembles them, so adding a subcommand never touches another's code.
Subcommands whose module does not exist yet are named in ``--help`` as planned, not faked.
"""
from __future__ import annotations

import importlib

import click

# (module under daic.commands, what it does) in the order --help shows them.
SUBCOMMANDS: tuple[tuple[str, str], ...] = (
    ("data", "inspect datasets, corruptions and operational scenarios"),
    ("store", "look inside the object store"),
    ("train", "train the first model on Ray and register it"),
    ("retrain", "retrain from the champion with labeled operational batches"),
    ("models", "list model versions and their lineage"),
    ("oracle", "the pseudo-oracle sidecar (serve) and offline oracle checks"),
    ("serve", "run the model server, sidecar and gateway locally"),
    ("assess", "sample operational inputs for labeling and estimate accuracy"),
    ("label", "the labeling web page for a cycle's sampled inputs"),
    ("pipeline", "compile, run (kfp.local) or submit the assess-and-improve pipeline"),
    ("controller", "run the AssessmentCycle reconcile loop locally"),
    ("status", "show the state of a local AssessmentCycle"),
    ("report", "build report.html from the records in the object store"),
    ("demo", "the whole cycle on one machine"),
)


def _load(module: str) -> click.Command | None:
    try:
        mod = importlib.import_module(f"daic.commands.{module}")
    except ModuleNotFoundError as exc:
        if exc.name == f"daic.commands.{module}":
            return None
        raise
    return mod.command


class _Group(click.Group):
    """Loads subcommands lazily, so `daic --help` does not import torch, ray or kfp."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, _ in SUBCOMMANDS if _load(name) is not None]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return _load(name) if name in dict(SUBCOMMANDS) else None

    def invoke(self, ctx: click.Context):
        """A store that fails under a subcommand (unreachable, refusing, timing out) is a one-line
        error naming it, from every subcommand, never a traceback; so is a local file or folder the
        command cannot read or write (``--out /read-only/x``: the path and the system's reason)."""
        from daic.storage.errors import StorageError

        try:
            return super().invoke(ctx)
        except StorageError as exc:
            raise click.ClickException(f"object store: {exc}") from exc
        except OSError as exc:
            if exc.filename is None:  # not a path (a socket, a timeout): a bug or handled elsewhere
                raise
            target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else str(exc.filename)
            raise click.ClickException(f"{target}: {exc.strerror or exc}") from exc

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        planned = [(n, d) for n, d in SUBCOMMANDS if _load(n) is None]
        if planned:
            with formatter.section("Planned (not yet available)"):
                formatter.write_dl(planned)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="daic")
def main() -> None:
    """daic: keep a deployed image classifier accurate in operation (DAIC cycle)."""


if __name__ == "__main__":
    main()
