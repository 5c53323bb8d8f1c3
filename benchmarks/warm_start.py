"""Warm start (continual extension) vs training from scratch, after a corruption shift.

Usage:
    python benchmarks/warm_start.py [--corruption fog --severity 4] [--labels 1000]
                                    [--store file:///tmp/daic-warm] [--parent v0001]
                                    [--initial-epochs 4] [--warm-epochs 2] [--workers 2]

The DAIC story in one run, on Ray (local, CPU here):

1. the champion: SmallCNN + ShadowNet trained from scratch on the 55,000 base images
   (``--parent`` reuses a version already in ``--store`` instead);
2. operation shifts: a labeled batch of ``--labels`` test images with the corruption
   (``test[0:labels]``, the inputs humans would have labeled) goes to ``labels/<cycle>/``;
3. warm start: fine-tune both networks from the champion on base + labeled batch
   (``--warm-epochs``, lr 1e-3, labeled examples oversampled x10) -- Gesmundo 2022's continual
   development: one model extended, not a new trial model;
4. from scratch on the same data (base + the same labeled batch, same oversampling), once with
   the champion's epoch budget and once with the warm start's.

Accuracy is measured on the clean test split and on the corrupted test images the labeled batch
did *not* contain (``test[5000:10000]``, corrupted with another noise seed), so the gain is
generalisation to the shift, not memorised labels. Wall time is ``TorchTrainer.fit`` (Ray's
start-up is reported apart).
"""
from __future__ import annotations

import argparse
import os
import tempfile

EVAL_START = 5000


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corruption", default="fog")
    p.add_argument("--severity", type=int, default=4, choices=range(1, 6))
    p.add_argument("--labels", type=int, default=1000, help="labeled corrupted images (from test[0:N])")
    p.add_argument("--store", default=None, help="object store URL (default: a fresh temporary directory)")
    p.add_argument("--parent", default=None, help="reuse this version of 'mnist' as the champion")
    p.add_argument("--initial-epochs", type=int, default=4)
    p.add_argument("--warm-epochs", type=int, default=2)
    p.add_argument("--oversample", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--skip-scratch", action="store_true", help="only the warm start (faster)")
    return p.parse_args()


def main() -> None:
    args = _parse()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import numpy as np
    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm

    from daic.data.corruptions import corrupt
    from daic.data.mnist import load_split
    from daic.models.inference import accuracy
    from daic.models.registry import ModelRegistry
    from daic.storage import open_store
    from daic.training.config import TrainConfig
    from daic.training.workflow import RETRAIN_DEFAULTS, train_and_register

    if args.labels > EVAL_START:
        raise SystemExit(f"--labels must be <= {EVAL_START} (the evaluation images start there)")
    tmp = None
    if args.store is None:
        tmp = tempfile.TemporaryDirectory(prefix="daic-warm-")
        args.store = f"file://{tmp.name}"
    store = open_store(args.store)
    registry = ModelRegistry(store, "mnist")
    test = load_split("test")
    cycle = f"bench-{args.corruption}-{args.severity}-{args.labels}"
    prefix = f"labels/{cycle}/"
    labeled_images = corrupt(test.images[: args.labels], args.corruption, args.severity, seed=11)
    store.put_arrays(f"{prefix}batch-0.npz", images=labeled_images, labels=test.labels[: args.labels],
                     ids=np.array([f"test-{i}" for i in range(args.labels)]))
    eval_clean = (test.images, test.labels)
    eval_shift = (corrupt(test.images[EVAL_START:], args.corruption, args.severity, seed=12), test.labels[EVAL_START:])

    common = {"num_workers": args.workers, "cpus_per_worker": 1}
    runs = []  # (label, version, epochs, fit wall s, ray start s)
    steps = []
    if args.parent is None:
        steps.append(("champion (scratch, base only)", TrainConfig(epochs=args.initial_epochs, **common), "if-none"))
    else:
        parent_card = registry.card(args.parent)
        runs.append(("champion (reused)", args.parent, parent_card.train_config.get("epochs"),
                     parent_card.metrics.get("train_wall_s", float("nan")), parent_card.metrics.get("ray_start_s", 0.0)))
    for label, config, promote in tqdm(steps, desc="train champion", disable=not steps):
        out = train_and_register(store, "mnist", config, promote=promote)
        runs.append((label, out.version, config.epochs, out.run.fit_wall_s, out.run.ray_start_s))
    parent = args.parent or runs[0][1]

    plan = [(f"warm start from {parent}", TrainConfig(**{**RETRAIN_DEFAULTS, "epochs": args.warm_epochs,
                                                         "operational_oversample": args.oversample, **common},
                                                      warm_start_from=parent, labels_prefix=prefix))]
    if not args.skip_scratch:
        for epochs in sorted({args.initial_epochs, args.warm_epochs}, reverse=True):
            plan.append((f"scratch, same data, {epochs} ep", TrainConfig(
                epochs=epochs, operational_oversample=args.oversample, labels_prefix=prefix, **common)))
    for label, config in tqdm(plan, desc="retrain"):
        out = train_and_register(store, "mnist", config, promote="never", notes={"benchmark": "warm_start"})
        runs.append((label, out.version, config.epochs, out.run.fit_wall_s, out.run.ray_start_s))

    table = Table(title=f"warm start vs scratch: {args.labels} labeled {args.corruption}/{args.severity} images; "
                        f"shifted eval = test[{EVAL_START}:] corrupted (not labeled)")
    for col in ("model", "version", "epochs", "fit wall s", "Ray start s", "clean test acc",
                f"{args.corruption}/{args.severity} acc", "shadow shifted acc"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for label, version, epochs, wall, ray_start in runs:
        model, shadow = registry.load_networks(version)
        table.add_row(label, version, str(epochs), f"{wall:.0f}", f"{ray_start:.1f}",
                      f"{100 * accuracy(model, *eval_clean):.2f}%", f"{100 * accuracy(model, *eval_shift):.2f}%",
                      f"{100 * accuracy(shadow, *eval_shift):.2f}%")
    Console(width=200).print(table)
    for line in registry.lineage_lines():
        print(line)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
