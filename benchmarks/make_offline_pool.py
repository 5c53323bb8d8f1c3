"""Build operational pools from *real* model outputs for ``offline_estimation.py --pool``.

The offline benchmark's default pools are simulated (``daic.sampling.simulate``): their oracle
miscalibration has the same logistic shape the adaptive designs recalibrate with, which flatters
those designs. This script makes pools the way the product makes them: test-split inputs under a
realistic shift (``daic.data.scenarios``), the trained SmallCNN's predictions, and the per-input
P(correct) of the real pseudo-oracle (``daic.oracles.OnlineAssessor``, fitted on the val split's
oracle reference and its synthetic shifts only), with the truth kept aside for scoring.

Pools (each a mixture of clean and corrupted inputs, as operation after a drift is):

* ``mixture-heldout``: half the inputs corrupted, spread over translate/2, contrast/3,
  gaussian_noise/4 and rotate/3; the assessor is fitted *without* those four corruption types
  (the honest case: a shift nobody simulated when fitting the oracle).
* ``mixture-seen``: every input corrupted, over elastic/4, impulse_noise/3 and pixelate/4, with
  the assessor as deployed (all 20 types in its shifted reference; val images and other noise
  seeds, never these test inputs).

Models, references and scenario outputs come from ``benchmarks/online_estimation.py`` (cached under
``.daic/bench-cache/online/``; trained there on the train split if absent). Writes
``<out>/pool-<name>.npz`` with arrays ``p_correct``, ``correct``, ``predictions``, ``labels`` and
``meta`` (JSON), which ``offline_estimation.py --pool`` reads.

    .venv/bin/python benchmarks/make_offline_pool.py                 # both pools, 15,000 inputs
    .venv/bin/python benchmarks/offline_estimation.py --pool .daic/bench-cache/offline/pool-mixture-heldout.npz
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import online_estimation as online  # noqa: E402  (benchmarks/ is not a package)

OUT = Path(".daic/bench-cache/offline")
BATCH = 500  # scenario batch size; pool size must be a multiple


@dataclass(frozen=True)
class PoolSpec:
    """One pool: a mixture scenario of the test split and which corruption types the oracle may know."""

    name: str
    mixture: tuple[tuple[str, int], ...]
    share: float
    held_out: bool  # fit the assessor without the mixture's corruption types
    seed: int


POOLS = {
    "mixture-heldout": PoolSpec("mixture-heldout", online.MIXTURES[0], 0.5, True, 501),
    "mixture-seen": PoolSpec("mixture-seen", online.MIXTURES[2], 1.0, False, 502),
}


def build_pool(spec: PoolSpec, size: int, models, ref, shifted) -> dict[str, np.ndarray]:
    """Arrays of one pool (see the module docstring); the assessor never sees test inputs."""
    from daic.data.scenarios import build_scenario, materialise
    from daic.oracles.pipeline import OnlineAssessor

    if size < BATCH or size % BATCH:
        raise ValueError(f"pool size must be a positive multiple of {BATCH}, got {size}")
    types = frozenset(c for c, _ in spec.mixture)
    fit_on = shifted.without_types(types) if spec.held_out else shifted
    t0 = time.time()
    assessor = OnlineAssessor().fit(ref, fit_on)
    t_fit = time.time() - t0
    stream = materialise(build_scenario("mixture", seed=spec.seed, batch_size=BATCH, n_steps=size // BATCH,
                                        drift_start=0, mixture=spec.mixture, share=spec.share))
    out = models.outputs(stream.images, stream.labels)
    scores = assessor.score(out.probs, out.embeddings, out.shadow_probs)
    correct = out.correct
    meta = {
        "pool": spec.name, "scenario": "mixture", "mixture": [list(m) for m in spec.mixture], "share": spec.share,
        "seed": spec.seed, "size": size, "split": "test",
        "assessor": "held out: fitted without " + ",".join(sorted(types)) if spec.held_out else "seen: all types",
        "accuracy": float(correct.mean()), "oracle_accuracy": float(scores.p_correct.mean()),
        "reference_accuracy": float(ref.accuracy), "assessor_fit_s": round(t_fit, 1),
    }
    return {"p_correct": scores.p_correct, "correct": correct, "predictions": out.probs.argmax(1).astype(np.int64),
            "labels": out.labels, "meta": np.array(json.dumps(meta))}


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for ``positive`` (Mann-Whitney, ties half)."""
    from scipy.stats import rankdata

    r = rankdata(score)
    n1 = int(positive.sum())
    n0 = positive.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((r[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pools", default=",".join(POOLS), help=f"comma-separated, from {', '.join(POOLS)}")
    ap.add_argument("--size", type=int, default=15_000, help=f"inputs per pool (multiple of {BATCH})")
    ap.add_argument("--out", default=str(OUT), help="folder for pool-<name>.npz")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args(argv)
    names = args.pools.split(",")
    unknown = [n for n in names if n not in POOLS]
    if unknown:
        ap.error(f"unknown pool(s) {unknown}; valid: {', '.join(POOLS)}")
    import torch

    torch.set_num_threads(args.threads)
    models = online.Models()
    ref, shifted = online.references(models)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    print("| pool | inputs | true accuracy | oracle claims | AUROC of p_correct | assessor | file |")
    print("|---|---:|---:|---:|---:|---|---|")
    for name in names:
        arrays = build_pool(POOLS[name], args.size, models, ref, shifted)
        path = out_dir / f"pool-{name}.npz"
        np.savez(path, **arrays)
        meta = json.loads(str(arrays["meta"]))
        print(f"| {name} | {meta['size']} | {meta['accuracy']:.4f} | {meta['oracle_accuracy']:.4f} | "
              f"{auroc(arrays['p_correct'], arrays['correct']):.3f} | {meta['assessor']} | {path} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
