"""How much of a drop can this network regain at all? The label ceiling of issues 16 and 21.

Both issues score a cycle by the regained fraction (after - before) / (clean - before), with the
champion's *clean* accuracy as the target. For some corruptions that target is out of reach of any
amount of labels: the corruption destroys information, or the network is too small to undo it. This
script measures the ceiling directly: the champion is fine-tuned (warm start, as a retrain) on the
whole train split with **every** image labelled -- the 55,000 base images clean and the same images
again under the scenario's corruption -- and evaluated on corrupted test images that nothing trained
on. Its regained fraction is what a cycle could reach with ~275 times issue 16's 200-label budget.

    .venv/bin/python benchmarks/oracle_ceiling.py --scenarios glass_blur/4,motion_blur/4,mixture

Per scenario it prints the drifted accuracy before, with the oracle retrain, the clean accuracy
before and after, and the ceiling of the regained fraction; a plain markdown table at the end.
The champion is ``benchmarks/online_estimation.py``'s cached SmallCNN (3 epochs on the train split).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from daic.data.corruptions import corrupt  # noqa: E402
from daic.data.mnist import load_split  # noqa: E402
from daic.demo.config import DEFAULT_MIXTURE  # noqa: E402
from daic.models.inference import accuracy  # noqa: E402
from daic.models.weights import state_dict_to_bytes  # noqa: E402
from daic.training.config import TrainConfig  # noqa: E402
from daic.training.loop import WarmStart, fit  # noqa: E402


def drift(images: np.ndarray, scenario: str, seed: int) -> np.ndarray:
    """``images`` under the scenario: ``name/severity``, or ``mixture`` (the demo's four conditions,
    a quarter of the images each)."""
    if scenario == "mixture":
        out = images.copy()
        for k, ((name, severity), rows) in enumerate(zip(DEFAULT_MIXTURE, np.array_split(np.arange(len(images)), 4))):
            out[rows] = corrupt(images[rows], name, severity, seed=seed + k)
        return out
    name, _, severity = scenario.partition("/")
    if not severity.isdigit():
        raise SystemExit(f"--scenarios: {scenario!r} is not name/severity or mixture")
    return corrupt(images, name, int(severity), seed=seed)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", default="glass_blur/4,motion_blur/4,mixture,fog/5,dotted_line/4,edges/4,impulse_noise/4,fog/4")
    p.add_argument("--base", type=int, default=55000, help="train-split images (each used clean and corrupted)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--eval-size", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from online_estimation import load_or_train

    train, test = load_split("train"), load_split("test")
    base_x, base_y = train.images[: a.base].astype(np.float32), train.labels[: a.base]
    perm = np.random.default_rng(a.seed + 100).permutation(len(test.labels))
    ev = perm[: a.eval_size]
    cx, cy = test.images[:2000], test.labels[:2000]
    model, _ = load_or_train("small_cnn")
    shadow, _ = load_or_train("shadow_net")
    warm = WarmStart({"model": state_dict_to_bytes(model), "shadow": state_dict_to_bytes(shadow)})
    c0 = accuracy(model, cx, cy)
    rows = []
    for scenario in tqdm(a.scenarios.split(","), desc="scenarios", unit="scenario"):
        ex, ey = drift(test.images[ev], scenario, seed=1234), test.labels[ev]
        d0 = accuracy(model, ex, ey)
        drifted = drift(train.images[: a.base], scenario, seed=7 + a.seed).astype(np.float32)
        cfg = TrainConfig(epochs=a.epochs, lr=1e-3, seed=a.seed, num_workers=1, batch_size=128)
        t0 = time.time()
        net = fit(cfg, np.concatenate([base_x, drifted]), np.concatenate([base_y, base_y]), n_base=a.base,
                  device=torch.device("cpu"), warm=warm).nets["model"].eval()
        d1, c1 = accuracy(net, ex, ey), accuracy(net, cx, cy)
        rows.append((scenario, d0, d1, c0, c1, (d1 - d0) / max(c0 - d0, 1e-9), time.time() - t0))
        tqdm.write(f"{scenario}: drifted {100 * d0:.2f} -> {100 * d1:.2f} %, clean {100 * c0:.2f} -> {100 * c1:.2f} %")
    print(f"\nOracle retrain: {a.base:,} clean + {a.base:,} corrupted labelled train images, {a.epochs} epochs, "
          f"warm start; {a.eval_size:,} corrupted test images, 2,000 clean.\n")
    print("| scenario | drifted before | drifted, oracle | regained ceiling | clean before | clean, oracle | fit s |")
    print("|---|---|---|---|---|---|---|")
    for scenario, d0, d1, c0_, c1, reg, secs in rows:
        print(f"| {scenario} | {100 * d0:.2f} | {100 * d1:.2f} | **{reg:.2f}** | {100 * c0_:.2f} | {100 * c1:.2f} | {secs:.0f} |")


if __name__ == "__main__":
    main()
