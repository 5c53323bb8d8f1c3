"""Time the wrapped assessor's build (daic.filters.assessor, issue 21): references, then fit, the old way
(every alignment candidate of every input scored, batches of 1,024 inputs: the code before
``searched_filter`` and ``REFERENCE_BATCH``) and the new way, in
one run on the cached filter benchmark store, and check that both give the same references and the
same scores.

    nice -n 10 taskset -c 0 .venv/bin/python benchmarks/wrapped_assessor.py            # v0024, v0052, gated
    nice -n 10 taskset -c 0 .venv/bin/python benchmarks/wrapped_assessor.py --quick    # val_limit 500, 10 per condition

The store is the one ``benchmarks/filter.py`` fills (``.daic/bench-cache/filter``: champion v0001 of
"mnist", filter versions v0024 generic and v0052 mixture-adapted). Per filter the old and the new
way alternate (old first), each timed on its own; the references' parts (filter, gate, classifier
outputs, corruptions) are summed over the clean and the shifted reference. "same references": the
two ways' probabilities, embeddings, shadow probabilities, labels and conditions bit for bit (and the
sidecar's reference fingerprint); "max |d score|": the largest difference of the two fitted
assessors' P(correct) and drift percentile on every reference row, and of the window estimate on
the shifted rows.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default=None, help="store URL (default: the filter benchmark's cache)")
    p.add_argument("--filters", nargs="+", default=["v0024", "v0052"], help="filter versions (of model mnist)")
    p.add_argument("--gate", default="gated", choices=("gated", "always", "off"))
    p.add_argument("--val-limit", type=int, default=None, help="first N val rows (default: all 5,000)")
    p.add_argument("--shift-per-condition", type=int, default=100)
    p.add_argument("--quick", action="store_true", help="--val-limit 500 --shift-per-condition 10")
    args = p.parse_args()
    if args.quick:
        args.val_limit, args.shift_per_condition = 500, 10
    if args.val_limit is not None and args.val_limit < 4:
        p.error("--val-limit must be >= 4")
    if args.shift_per_condition < 0:
        p.error("--shift-per-condition must be >= 0")
    return args


def _same_references(a, b) -> bool:
    from daic.sidecar.assessment import reference_fingerprint

    def arrays(refs):
        clean, shifted = refs
        out = [clean.probs, clean.embeddings, clean.shadow_probs, clean.labels]
        if shifted is not None:
            r = shifted.reference
            out += [r.probs, r.embeddings, r.shadow_probs, r.labels, shifted.conditions]
        return out

    return (all(np.array_equal(x, y) for x, y in zip(arrays(a), arrays(b)))
            and reference_fingerprint(*a) == reference_fingerprint(*b))


def _score_gap(old, new, refs) -> float:
    clean, shifted = refs
    rows = [clean] + ([shifted.reference] if shifted is not None else [])
    gap = 0.0
    for ref in rows:
        so = old.score(ref.probs, ref.embeddings, ref.shadow_probs)
        sn = new.score(ref.probs, ref.embeddings, ref.shadow_probs)
        gap = max(gap, float(np.abs(so.p_correct - sn.p_correct).max()), float(np.abs(so.drift - sn.drift).max()))
    if shifted is not None:
        now = time.time()
        est = []
        for assessor in (old, new):
            e = assessor.new_estimator()
            e.update(assessor.score(shifted.reference.probs, shifted.reference.embeddings,
                                    shifted.reference.shadow_probs), now)
            est.append(e.estimate(now).accuracy)
        gap = max(gap, abs(est[0] - est[1]))
    return gap


def main() -> None:
    args = _parse()
    from rich.console import Console

    from daic.filters.assessor import wrapped_references
    from daic.filters.registry import FilterRegistry
    from daic.models import assessor_store
    from daic.models.registry import ModelRegistry
    from daic.storage import open_store

    console = Console(width=250)
    store = open_store(args.store or f"file://{Path('.daic/bench-cache/filter').resolve()}")
    filters = FilterRegistry(store, "mnist")
    console.print(f"val_limit {args.val_limit or 'all'}, shift_per_condition {args.shift_per_condition}, gate "
                  f"{args.gate}; load average {os.getloadavg()[0]:.1f}")
    console.print("| filter | way | filter s | gate s | outputs s | corrupt s | references s | fit s | total s | "
                  "same references | max abs d score |")
    console.print("|---|---|---|---|---|---|---|---|---|---|---|")
    for fv in args.filters:
        version = filters.wraps(fv)
        model, shadow = ModelRegistry(store, "mnist").load_networks(version)
        net = filters.load_filter(fv, classifier=model)
        thr = float(filters.card(fv).metrics.get("gate_threshold", 0.0))
        built = {}
        for way in ("old", "new"):
            parts: dict[str, float] = {}
            t = time.perf_counter()
            refs = wrapped_references(model, shadow, net, args.gate, thr, val_limit=args.val_limit,
                                      shift_per_condition=args.shift_per_condition, timings=parts,
                                      **({"search_all": True, "batch_size": 1024} if way == "old" else {}))
            t_refs = time.perf_counter() - t
            t = time.perf_counter()
            assessor = assessor_store.fit(*refs)
            t_fit = time.perf_counter() - t
            built[way] = (refs, assessor, parts, t_refs, t_fit)
        for way in ("old", "new"):
            refs, assessor, parts, t_refs, t_fit = built[way]
            same = gap = ""
            if way == "new":
                same = "yes" if _same_references(built["old"][0], refs) else "NO"
                gap = f"{_score_gap(built['old'][1], assessor, refs):.2g}"
            console.print(f"| {fv} ({version}) | {way} | {parts.get('filter', 0):.1f} | {parts.get('gate', 0):.1f} | "
                          f"{parts.get('outputs', 0):.1f} | {parts.get('corrupt', 0):.1f} | {t_refs:.1f} | {t_fit:.1f} | "
                          f"{t_refs + t_fit:.1f} | {same} | {gap} |")
    console.print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
