"""Time every corruption on the full MNIST test split (10,000 images) at one severity.

Usage: python benchmarks/corruption_speed.py [--severity 3] [--repeats 3] [--threads 1]

A second table times building each named operational scenario at its defaults as arrays
(``materialise(build_scenario(name))``), which is what the online-estimator and sampling
benchmarks pay per run.

The brief for daic.data asks that a whole 10k split corrupts in a few seconds per corruption on
one core, so the default pins BLAS/OpenMP to one thread (set before numpy is imported). Reports the
best of ``--repeats`` runs (the least disturbed by other load on a shared machine) and the median.
"""
from __future__ import annotations

import argparse
import os
import sys


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--severity", type=int, default=3, choices=range(1, 6))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (default 1)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    return p.parse_args()


def main() -> None:
    args = _parse()
    if args.repeats < 1:
        sys.exit("--repeats must be >= 1")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import platform
    import statistics
    import time

    import numpy as np
    import scipy
    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm

    from daic.data.corruptions import CORRUPTIONS, corrupt
    from daic.data.mnist import load_split
    from daic.data.scenarios import SCENARIOS, build_scenario, materialise

    images = np.array(load_split(args.split).images)
    n = len(images)
    rows = []
    for name in tqdm(CORRUPTIONS, desc=f"corrupting {n} images", unit="corruption"):
        times = []
        for rep in range(args.repeats):
            t0 = time.perf_counter()
            out = corrupt(images, name, args.severity, seed=rep)
            times.append(time.perf_counter() - t0)
        assert out.shape == images.shape and out.dtype == np.float32
        change = float(np.abs(out - images).mean())
        rows.append((name, min(times), statistics.median(times), change))

    table = Table(title=f"corruption speed: {n} MNIST {args.split} images, severity {args.severity}, "
                        f"{args.threads} thread(s), best/median of {args.repeats}")
    for col in ("corruption", "best s", "median s", "images/s (best)", "mean |change|"):
        table.add_column(col, justify="left" if col == "corruption" else "right")
    for name, best, med, change in rows:
        table.add_row(name, f"{best:.3f}", f"{med:.3f}", f"{n / best:,.0f}", f"{change:.3f}")
    total = sum(r[1] for r in rows)
    table.add_row("[bold]all[/bold]", f"{total:.2f}", f"{sum(r[2] for r in rows):.2f}",
                  f"{n * len(rows) / total:,.0f}", "")
    console = Console()
    console.width = max(console.width, 100)
    console.print(table)

    stream_table = Table(title=f"materialise(build_scenario(name)) at defaults, best of {args.repeats}")
    for col in ("scenario", "steps x batch", "best s", "inputs/s"):
        stream_table.add_column(col, justify="left" if col == "scenario" else "right")
    for name in SCENARIOS:
        times = []
        for rep in range(args.repeats):
            t0 = time.perf_counter()
            stream = materialise(build_scenario(name, seed=rep))
            times.append(time.perf_counter() - t0)
        spec = build_scenario(name).spec
        stream_table.add_row(name, f"{spec.n_steps} x {spec.batch_size}", f"{min(times):.3f}",
                             f"{len(stream.ids) / min(times):,.0f}")
    console.print(stream_table)
    console.print(f"python {platform.python_version()}, numpy {np.__version__}, "
                  f"scipy {scipy.__version__}, {platform.processor() or platform.machine()}, "
                  f"{os.cpu_count()} CPUs visible", highlight=False)


if __name__ == "__main__":
    main()
