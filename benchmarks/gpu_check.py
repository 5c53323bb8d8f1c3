"""A device check for retraining, minutes on one GPU: what precision, batch and placement the trainer
picks there, how fast the network trains, what a Ray Train fit costs besides training, and what a
whole retrain through the pipeline's train step costs.

Usage:
    python benchmarks/gpu_check.py                 # on a GPU (the default when CUDA is available)
    python benchmarks/gpu_check.py --cpu --base-limit 1024 --epochs 2 --shift-per-condition 2
                                                   # the same steps, small, on CPU (tests run this)

Sections, each row printed as soon as it is measured (``|``-separated, flushed):

1. ``device``: name, compute capability, native bf16, and the plan ``daic.training.device_plan``
   chooses there (precision, batch, learning rate, torch.compile, data placement, with reasons).
2. ``throughput``: plain PyTorch (``daic.training.loop.fit``, both networks, no Ray) at batch 128
   and 2048, with the training set on the device and staged through pinned host memory;
   steady samples/s = the median over epochs after the first.
3. ``ray fit``: one Ray Train fit in Ray worker processes on a private local Ray: Ray start,
   the fit's fixed cost (worker start-up, data, checkpoints, teardown: ``TrainRun.phases``) and
   the epochs; then the same fit in-process (Ray Train's local mode, the one-worker default).
4. ``retrain``: the pipeline's train step (``daic.components.train.logic.run``, backend local) on a
   fresh store with a registered champion and a labeled batch: its wall time, the fit's phases,
   registration (oracle references) included.

Expected on one H100 (a prediction until run there; basis: DESIGN.md's H100 table for this
network with the data on the GPU): ~500k samples/s at batch 2048 bf16 (497k fp32 / 587k bf16
measured with plain PyTorch), ~40-50k at batch 128; a whole retrain step <= 30 s.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

SEP = " | "


def emit(*cells) -> None:
    print(SEP.join(str(c) for c in cells), flush=True)


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="run on CPU (small sizes make it a smoke test)")
    p.add_argument("--base-limit", type=int, default=None, help="training images (default: all 55,000)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per throughput run and per fit")
    p.add_argument("--batches", default="128,2048", help="batch sizes of the throughput rows")
    p.add_argument("--shift-per-condition", type=int, default=100,
                   help="oracle reference size of the retrained version (the step's default: 100)")
    p.add_argument("--skip", default="", help="comma-separated sections to skip: throughput,ray,retrain")
    return p.parse_args()


def device_section(use_gpu: bool, n_examples: int):
    import torch

    from daic.training.device_plan import choose, probe
    from daic.training.precision import select_device

    device = select_device(use_gpu)
    caps = probe(device)
    plan = choose(caps, n_examples=n_examples)
    emit("device", caps.name, f"torch {torch.__version__}", f"CUDA {torch.version.cuda}",
         f"compute capability {'-' if caps.compute_capability is None else '%d.%d' % caps.compute_capability}",
         f"native bf16 {caps.native_bf16}", f"memory {caps.memory_bytes / 2**30:.0f} GiB")
    emit("plan", f"precision {plan.precision}", f"batch {plan.batch_size}", f"lr {plan.lr:.3g}",
         f"compile {plan.compile}", f"data on device {plan.data_on_device}")
    for reason in plan.reasons:
        emit("plan-reason", reason)
    return device, plan


def throughput_section(args, device, train) -> None:
    from daic.training.config import TrainConfig
    from daic.training.loop import fit

    n = len(train.labels)
    emit("throughput", "batch", "data", "precision", "steady samples/s", "epoch 1 s", "steady epoch s")
    for batch in [int(b) for b in args.batches.split(",") if b]:
        for on_device in (True, False):
            config = TrainConfig(epochs=args.epochs, batch_size=batch, num_workers=1, use_gpu=not args.cpu,
                                 base_limit=n, data_on_device=on_device, lr=1e-3)
            history: list[dict] = []
            result = fit(config, train.images, train.labels, n_base=n, device=device,
                         on_epoch=lambda m, nets: history.append(m))
            rest = history[1:] or history
            emit("throughput", batch, "device" if on_device else "pinned host", result.precision,
                 f"{statistics.median(h['samples_per_s'] for h in rest):,.0f}", f"{history[0]['epoch_time_s']:.2f}",
                 f"{statistics.median(h['epoch_time_s'] for h in rest):.2f}")


def ray_section(args, n: int) -> None:
    from daic.storage import open_store
    from daic.training.config import TrainConfig
    from daic.training.trainer import run_training

    config = TrainConfig(epochs=args.epochs, num_workers=1, use_gpu=not args.cpu, base_limit=n, val_limit=1000)
    emit("ray fit", "mode", "Ray start s", "fit wall s", "fixed s", "startup s", "data s", "epochs s", "other s",
         "teardown s", "batch", "precision")
    for in_process, mode in ((False, "Ray worker process"), (True, "in-process (local mode)")):
        with tempfile.TemporaryDirectory() as folder:
            run = run_training(config, open_store(f"file://{folder}"), "check", in_process=in_process)
        p = run.phases
        emit("ray fit", mode, f"{run.ray_start_s:.1f}", f"{run.fit_wall_s:.1f}", f"{run.fixed_s:.1f}",
             *(f"{p.get(k, float('nan')):.1f}" for k in ("startup", "data", "epochs", "other", "teardown")),
             run.plan.get("batch_size"), run.precision)


def retrain_section(args, n: int) -> None:
    import numpy as np

    from daic.components import cycle_store
    from daic.components.testing.registry import register_untrained
    from daic.components.train.logic import TrainConfig, run
    from daic.data.corruptions import corrupt
    from daic.data.mnist import load_split
    from daic.storage import open_store

    with tempfile.TemporaryDirectory() as folder:
        store = open_store(f"file://{folder}")
        register_untrained(store, [None])
        cycle = "gpu-check"
        test = load_split("test")
        store.put_arrays(cycle_store.train_labels_key(cycle), images=corrupt(test.images[:200], "fog", 3, seed=1),
                         labels=test.labels[:200], ids=np.array([f"t{i}" for i in range(200)]))
        gpus = 0 if args.cpu else 1
        config = TrainConfig(backend="local", workers=1, cpus_per_worker=1, gpus_per_worker=gpus, pod_gpus=gpus,
                             epochs=args.epochs, base_limit=n, reference_shift_per_condition=args.shift_per_condition)
        start = time.perf_counter()
        result = run(store, cycle, config)
        wall = time.perf_counter() - start
        metrics = result.card.get("metrics", {})
        emit("retrain", "version", "wall s", "Ray start s", "fit wall s", "samples/s last epoch", "val accuracy")
        emit("retrain", result.version, f"{wall:.1f}", f"{metrics.get('ray_start_s', 0.0):.1f}",
             f"{metrics.get('train_wall_s', 0.0):.1f}", f"{metrics.get('samples_per_s_last_epoch', 0.0):,.0f}",
             f"{metrics.get('val_accuracy', float('nan')):.4f}")


def main() -> int:
    args = _parse()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); use --cpu for the CPU run",
              file=sys.stderr)
        return 2
    from daic.data.mnist import load_split

    skip = set(filter(None, args.skip.split(",")))
    train = load_split("train")
    n = len(train) if args.base_limit is None else min(args.base_limit, len(train))

    class Subset:  # the first n images, as the trainer's base_limit takes them
        images, labels = train.images[:n], train.labels[:n]

    started = time.perf_counter()
    device, _ = device_section(not args.cpu, n)
    if "throughput" not in skip:
        throughput_section(args, device, Subset)
    if "ray" not in skip:
        ray_section(args, n)
    if "retrain" not in skip:
        retrain_section(args, n)
    emit("done", f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
