"""``daic retrain``: warm-start from a registered version with labeled operational batches."""
from __future__ import annotations

from typing import Any, Optional

import click

from daic.commands.train import config_fields, progress_lines, report, training_options, validation_error
from daic.commands.values import TEXT, VERSION_REF, count, number


def _notes(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--note")
        out[key] = value
    return out


@click.command("retrain")
@click.option("--from", "parent", default="champion", show_default=True, type=VERSION_REF,
              help="version to start from: champion, latest or an id such as v0003")
@click.option("--labels", "labels_prefix", required=True, metavar="PREFIX", type=TEXT,
              help="object-store prefix of the labeled batches, e.g. labels/cycle-1/")
@click.option("--oversample", type=count(0), default=10, show_default=True,
              help="repeat each labeled example this many times per epoch")
@click.option("--operational-weight", type=number(), default=1.0, show_default=True,
              help="loss weight of labeled examples relative to base ones")
@click.option("--operational-share", type=number(), default=0.3, show_default=True,
              help="least share of every epoch taken by labeled examples (0: off, only --oversample)")
@click.option("--unlabeled", "unlabeled_key", default=None, metavar="KEY", type=TEXT,
              help="object-store .npz of unlabelled operational inputs (images, p_correct) for the "
                   "semi-supervised options below")
@click.option("--pseudo-label-threshold", type=number(), default=None,
              help="add the parent's pseudo-labels where the input's P(correct) reaches this")
@click.option("--consistency-weight", type=number(), default=0.0, show_default=True,
              help="weight of the FixMatch-style consistency loss on the unlabelled inputs (0: off)")
@click.option("--bn-adapt", type=click.Choice(["off", "pool", "pool+base"]), default="off", show_default=True,
              help="re-estimate batch-norm statistics after training (AdaBN) on these inputs")
@click.option("--augment", type=click.Choice(["off", "chain", "augmix", "select"]), default="select",
              show_default=True,
              help="distort base examples with a fixed family of generic operations (daic.training.augment); "
                   "select: chain or off, whichever classifies labels held out of both candidates better")
@click.option("--augment-share", type=number(), default=0.5, show_default=True,
              help="share of each batch's base examples distorted")
@click.option("--self-training-rounds", type=count(0), default=0, show_default=True,
              help="self-training rounds with the trained challenger as teacher on the unlabelled inputs")
@click.option("--self-training-threshold", type=number(), default=0.9, show_default=True,
              help="the teacher's mean confidence over its views needed for a pseudo-label")
@click.option("--note", "notes", multiple=True, metavar="KEY=VALUE", type=TEXT, help="recorded in the data lineage")
@click.option("--promote", type=click.Choice(["if-none", "always", "never"]), default="never", show_default=True,
              help="make the new version champion (normally the pipeline's evaluate step decides)")
@training_options({"epochs": 2, "batch_size": None, "lr": 1e-3})
def command(parent: str, labels_prefix: str, oversample: int, operational_weight: float,
            operational_share: float, unlabeled_key: Optional[str], pseudo_label_threshold: Optional[float], consistency_weight: float,
            bn_adapt: str, augment: str, augment_share: float,
            self_training_rounds: int, self_training_threshold: float, notes: tuple[str, ...],
            promote: str, store_url: Optional[str], name: str, ray_address: Optional[str],
            shift_per_condition: int, result_key: Optional[str], as_json: bool, verbose: bool,
            **options: Any) -> None:
    """Fine-tune both networks from PARENT's weights on the base split + labeled batches, and
    register the result with PARENT as its parent."""
    from pydantic import ValidationError

    from daic.models.reference import ReferenceConfig
    from daic.models.registry import ModelRegistry
    from daic.storage import KeyNotFound, StorageError, open_store
    from daic.training.config import TrainConfig
    from daic.training.trainer import TrainingFailed
    from daic.training.workflow import train_and_register

    # The options are checked before the registry is read, so a bad value is named even when the
    # parent cannot be resolved; warm_start_from becomes the resolved id below.
    lineage_notes = _notes(notes)
    try:
        config = TrainConfig(**config_fields(options), labels_prefix=labels_prefix, warm_start_from=parent,
                             operational_oversample=oversample, operational_weight=operational_weight,
                             operational_share=operational_share or None,
                             unlabeled_key=unlabeled_key, pseudo_label_threshold=pseudo_label_threshold,
                             consistency_weight=consistency_weight, bn_adapt=bn_adapt, augment=augment,
                             augment_share=augment_share, self_training_rounds=self_training_rounds,
                             self_training_threshold=self_training_threshold)
        reference = ReferenceConfig(dataset=config.dataset, shift_per_condition=shift_per_condition)
    except (ValidationError, ValueError) as exc:
        raise validation_error(exc) from exc
    try:
        store = open_store(store_url)
        version = ModelRegistry(store, name).resolve(parent)
    except KeyNotFound as exc:
        raise click.BadParameter(str(exc), param_hint="--from") from exc
    except (StorageError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    config = config.model_copy(update={"warm_start_from": version})
    try:
        with progress_lines(as_json):
            outcome = train_and_register(store, name, config, promote=promote, ray_address=ray_address,
                                         notes=lineage_notes, reference_config=reference, verbose=verbose)
    except (StorageError, ValueError, TrainingFailed) as exc:
        raise click.ClickException(str(exc)) from exc
    report(outcome, store, result_key, as_json)
