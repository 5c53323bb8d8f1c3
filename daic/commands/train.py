"""``daic train``: train the first model on Ray (both networks) and register it.

Also holds the options ``daic retrain`` shares, and how an outcome is printed.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Optional

import click

from daic.commands.values import KEY, MODEL_NAME, SEED, STORE_URL, TEXT, count, invalid_fields, number

_STORE_HELP = "file:///path or s3://bucket/prefix (default: $DAIC_STORE or ./.daic/store)"


def training_options(defaults: dict[str, Any]) -> Callable:
    """Options common to train and retrain; ``defaults`` shows each command's own defaults.

    The option types refuse what is never a value (a word, NaN, a negative or 65-bit number);
    the ranges are TrainConfig's (one place), whose errors name the option (validation_error)."""
    opts = [
        click.option("--store", "store_url", default=None, metavar="URL", type=STORE_URL, help=_STORE_HELP),
        click.option("--name", default="mnist", show_default=True, type=MODEL_NAME, help="model name in the registry"),
        click.option("--epochs", type=count(0), default=defaults["epochs"], show_default=True),
        click.option("--batch-size", type=count(0), default=defaults["batch_size"],
                     help="per worker (default: chosen for the device, 128 on CPU, up to 2048 on a GPU)"),
        click.option("--lr", type=number(), default=defaults["lr"], show_default=True,
                     help="peak learning rate of the one-cycle schedule"),
        click.option("--num-workers", type=count(0), default=2, show_default=True, help="Ray Train workers"),
        click.option("--cpus-per-worker", type=count(0), default=1, show_default=True,
                     help="CPUs (and torch threads) per worker"),
        click.option("--use-gpu/--cpu", default=False, show_default=True, help="one GPU per worker, NCCL"),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
                     show_default=True, help="auto: bf16 (or fp16) autocast on GPU, fp32 on CPU"),
        click.option("--seed", type=SEED, default=0, show_default=True),
        click.option("--base-limit", type=count(0), default=None, help="use only the first N base training images"),
        click.option("--dataset", type=click.Choice(["mnist", "fashion-mnist"]), default="mnist",
                     show_default=True),
        click.option("--ray-address", default=None, metavar="ADDR", type=TEXT,
                     help="join this Ray cluster (default: $RAY_ADDRESS, else a private local Ray)"),
        click.option("--shift-per-condition", type=count(0), default=100, show_default=True,
                     help="val inputs per (corruption, severity) in the shifted oracle reference (0: none)"),
        click.option("--result-key", default=None, metavar="KEY", type=KEY,
                     help="also write the outcome as JSON to this object-store key (RayJob callers read it)"),
        click.option("--json", "as_json", is_flag=True, help="print the outcome as JSON"),
        click.option("-v", "--verbose", is_flag=True, help="show Ray's and the workers' logs"),
    ]

    def decorate(fn: Callable) -> Callable:
        for opt in reversed(opts):
            fn = opt(fn)
        return fn

    return decorate


CONFIG_OPTIONS = ("epochs", "batch_size", "lr", "num_workers", "cpus_per_worker", "use_gpu", "precision", "seed",
                  "base_limit", "dataset")


def config_fields(options: dict[str, Any]) -> dict[str, Any]:
    return {k: options[k] for k in CONFIG_OPTIONS if options.get(k) is not None}


#: TrainConfig fields set from an option of another name (``daic retrain``'s).
FIELD_OPTIONS = {"labels_prefix": "--labels", "warm_start_from": "--from", "operational_oversample": "--oversample",
                 "unlabeled_key": "--unlabeled", "shift_per_condition": "--shift-per-condition"}


def validation_error(exc: Exception) -> click.UsageError:
    """A pydantic ValidationError (or ValueError) as a usage error naming the options."""
    return invalid_fields(exc, FIELD_OPTIONS)


def progress_lines(as_json: bool):
    """One line per epoch while the run trains (to stderr with --json, so stdout stays JSON)."""
    from daic.training.progress import describe, listen

    return listen(lambda metrics: click.echo(f"  {describe(metrics)}", err=as_json))


def outcome_record(outcome) -> dict[str, Any]:
    card = outcome.card
    return {"name": card.name, "version": card.version, "parent": card.parent, "promoted": outcome.promoted,
            "metrics": card.metrics, "labeled_examples": card.data.operational_count,
            "checkpoint_path": outcome.run.checkpoint_path}


def report(outcome, store, result_key: Optional[str], as_json: bool) -> None:
    record = outcome_record(outcome)
    if result_key:
        store.put_json(result_key, record)
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    card, run = outcome.card, outcome.run
    table = Table(title="epochs (rank 0)")
    for col in ("epoch", "loss", "train acc", "val acc", "shadow val acc", "epoch s", "samples/s"):
        table.add_column(col, justify="right")
    for h in run.history:
        table.add_row(str(int(h["epoch"])), f"{h['train_loss']:.4f}", f"{100 * h['train_accuracy']:.2f}%",
                      f"{100 * h.get('val_accuracy', float('nan')):.2f}%",
                      f"{100 * h.get('shadow_val_accuracy', float('nan')):.2f}%",
                      f"{h['epoch_time_s']:.1f}", f"{h['samples_per_s']:.0f}")
    console = Console()
    console.print(table)
    m = card.metrics
    click.echo(
        f"registered {card.name} {card.version} (parent {card.parent or '-'}; "
        f"{card.data.base_count} base + {card.data.operational_count} labeled examples)\n"
        f"  test accuracy {100 * m['test_accuracy']:.2f}%  shadow {100 * m['shadow_test_accuracy']:.2f}%  "
        f"val {100 * m.get('val_accuracy', float('nan')):.2f}%\n"
        f"  Ray start {m['ray_start_s']:.1f} s, TorchTrainer.fit {m['train_wall_s']:.1f} s, "
        f"precision {run.precision} on {run.device}\n"
        f"  checkpoint {run.checkpoint_path}\n"
        f"  {'promoted to champion' if outcome.promoted else 'not promoted (champion unchanged)'}"
    )


@click.command("train")
@training_options({"epochs": 4, "batch_size": None, "lr": 4e-3})
@click.option("--promote", type=click.Choice(["if-none", "always", "never"]), default="if-none", show_default=True,
              help="make the new version champion (if-none: only when there is no champion yet)")
def command(store_url: Optional[str], name: str, ray_address: Optional[str], shift_per_condition: int,
            result_key: Optional[str], as_json: bool, verbose: bool, promote: str, **options: Any) -> None:
    """Train the first model (SmallCNN and its ShadowNet) on Ray and register it."""
    from pydantic import ValidationError

    from daic.models.reference import ReferenceConfig
    from daic.storage import StorageError, open_store
    from daic.training.config import TrainConfig
    from daic.training.trainer import TrainingFailed
    from daic.training.workflow import train_and_register

    try:
        config = TrainConfig(**config_fields(options))
        reference = ReferenceConfig(dataset=config.dataset, shift_per_condition=shift_per_condition)
    except (ValidationError, ValueError) as exc:
        raise validation_error(exc) from exc
    try:
        store = open_store(store_url)
        with progress_lines(as_json):
            outcome = train_and_register(store, name, config, promote=promote, ray_address=ray_address,
                                         reference_config=reference, verbose=verbose)
    except (StorageError, ValueError, TrainingFailed) as exc:
        raise click.ClickException(str(exc)) from exc
    report(outcome, store, result_key, as_json)
