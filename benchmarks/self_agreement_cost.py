"""Benchmark: what the served self-agreement costs the model server per input (issue 17).

The model server answers every request with the champion's and the shadow's outputs; with
self-agreement on (its ``self_agreement_views`` setting, default the served ``stretch:0``) it runs
the champion once more per view. This times :meth:`daic.serving.loading.ServedModel.outputs`, the
call the model server makes per request, on MNIST test images with no views (``off``), the served
view and the four shift/rotate views of :data:`daic.oracles.self_agreement.VIEWS`, at several batch
sizes, with one torch thread (the model server's default ``torch_threads``). The settings
alternate within each repeat, so a slow drift of the machine's load hits all alike; the table
shows medians and each setting's ratio to ``off`` (compare ratios; absolute times hold for this
CPU only).

    .venv/bin/python benchmarks/self_agreement_cost.py [--repeats 7] [--batches 1,8,32,128] [--compare median:3 ...]

The networks are the registry's SmallCNN and ShadowNet freshly initialised (seeded): the cost of
a forward pass does not depend on how accurate the weights are.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per setting and batch size")
    parser.add_argument("--batches", default="1,8,32,128", help="comma-separated batch sizes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the model server's default: 1)")
    parser.add_argument("--compare", nargs="*", default=[],
                        help="more view sets to time beside the served one, each 'kind:amount,...' (e.g. median:3)")
    args = parser.parse_args(argv)
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        parser.error(f"--batches must be comma-separated integers, got {args.batches!r}")
    if args.repeats < 1 or any(b < 1 for b in batches):
        parser.error("--repeats and every batch size must be >= 1")

    import torch
    from tqdm import tqdm

    from daic.data.mnist import load_split
    from daic.models.networks import build
    from daic.oracles.self_agreement import SERVED_VIEWS, VIEWS, parse_views, views_text
    from daic.serving.loading import ServedModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, shadow = build("small_cnn").eval(), build("shadow_net").eval()
    served = ServedModel("mnist", "bench", model, shadow)
    images = np.array(load_split("test").images[: max(batches) * 8], np.float32)  # writable, as a decoded request
    settings = {"off": (), views_text(SERVED_VIEWS) + " (served)": SERVED_VIEWS, "4 shift/rotate views": VIEWS}
    for text in args.compare:
        try:
            views = parse_views(text)
        except ValueError as exc:
            parser.error(f"--compare: {exc}")
        settings[views_text(views)] = views
    per_input: dict[tuple[str, int], list[float]] = {}
    for batch in batches:
        calls = max(1, 256 // batch)  # each timing covers at least 256 inputs
        for views in settings.values():  # warm-up: first calls allocate
            served.outputs(images[:batch], views)
        for _ in tqdm(range(args.repeats), desc=f"batch {batch}", leave=False):
            for name, views in settings.items():
                start = time.perf_counter()
                for i in range(calls):
                    j = (i * batch) % (len(images) - batch + 1)
                    served.outputs(images[j:j + batch], views)
                per_input.setdefault((name, batch), []).append((time.perf_counter() - start) / (calls * batch))

    print(f"\nModel server per-input cost of ServedModel.outputs (CPU, {args.threads} torch thread(s), "
          f"median of {args.repeats} rounds; ratio to 'off' in the same rounds)\n")
    head = ["batch"] + [f"{name} ms" for name in settings] + [f"{name} / off" for name in list(settings)[1:]]
    rows = []
    for batch in batches:
        med = {name: statistics.median(per_input[(name, batch)]) * 1000 for name in settings}
        ratios = [statistics.median(np.array(per_input[(name, batch)]) / np.array(per_input[("off", batch)]))
                  for name in list(settings)[1:]]
        rows.append([str(batch)] + [f"{med[n]:.3f}" for n in settings] + [f"{r:.2f}x" for r in ratios])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
