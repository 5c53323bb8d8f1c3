"""How often does a promotion rule promote a challenger that is worse, equal or better? (issue 16)

evaluate judges a challenger on the cycle's held-out draws (30 % of a 200-label sample: about 60
labels). This measures its rule, and two paired alternatives (daic.sampling.paired), on simulated
pools with known truth (daic.sampling.simulate): the champion's correctness is the pool's; the
challenger's is the champion's with inputs flipped (wrong -> right "gains", right -> wrong
"losses"), either at random or adversarially (gains where the oracle is unsure, which the
designs oversample, losses where it is sure, which they rarely draw). Per repetition the design
draws ``--budget`` inputs, ``--holdout-share`` of them are held out as the pipeline does
(daic.components.sample_operational.holdout), and each rule decides:

* ``interval`` (evaluate's rule): the challenger's estimate on the held-out draws > the upper end
  of the champion's interval from the whole sample;
* ``paired``: daic.sampling.paired.compare_paired(...).better (the design-based one-sided 95 %
  bound of the difference > 0 and McNemar's exact sign test at 5 %);
* ``non-inferior 2 pts``: the paired difference > 0 and its one-sided 95 % bound > -0.02.

The paired rules exist for SRS and the stratified design only (compare_paired refuses the
with-replacement designs); for those the table marks them ``*``: the same rules on the designs'
Hansen-Hurwitz terms, measured to show why compare_paired refuses them.

Printed: the share of repetitions that promote, per scenario, design and true difference.

    .venv/bin/python benchmarks/promotion_rule.py [--reps 300] [--pool 5000]
"""
from __future__ import annotations

import argparse

import numpy as np
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from daic.components.sample_operational.designs import make_design
from daic.components.sample_operational.holdout import split_holdout
from daic.sampling.paired import compare_paired
from daic.sampling.sample import Sample
from daic.sampling.simulate import challenger_correctness, simulate_pool

# (name, gains, losses per 5,000 inputs, adversarial placement)
CASES = (("-3 pts", 50, 200, False), ("-3 pts adversarial", 50, 200, True), ("-2 pts", 50, 150, False),
         ("equal", 150, 150, False), ("equal adversarial", 150, 150, True), ("+3 pts", 200, 50, False),
         ("+5 pts", 300, 50, False))
DESIGNS = ("srs", "stratified", "active", "failure-seeking", "dual")
PPS = ("active", "failure-seeking", "dual")  # with replacement: compare_paired refuses them


def paired(design, pool, h: Sample, a: np.ndarray, b: np.ndarray):
    """compare_paired; for a with-replacement design the same rule on its Hansen-Hurwitz
    terms, which compare_paired refuses because this benchmark showed it invalid."""
    if h.selection_prob is None:
        return compare_paired(design, pool, h, a, b, 0.95)
    from daic.sampling.paired import PairedComparison, sign_test_p
    from daic.sampling.pps import mean_interval

    d = b.astype(float) - a.astype(float)
    est, lower, _ = mean_interval(d / (pool.size * h.selection_prob), 0.90, skew_correction=True, widen_only=True)
    b_only, a_only = int(np.sum(b & ~a)), int(np.sum(a & ~b))
    return PairedComparison(est, lower, 0.95, len(d), b_only, a_only, sign_test_p(b_only, a_only), "hh-t")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=300)
    p.add_argument("--pool", type=int, default=5000)
    p.add_argument("--budget", type=int, default=200)
    p.add_argument("--holdout-share", type=float, default=0.3)
    p.add_argument("--scenarios", nargs="+", default=["drifted", "severe"])
    args = p.parse_args()
    scale = args.pool / 5000
    table = Table(title=f"share of {args.reps} repetitions that promote ({args.budget} labels, "
                        f"{args.holdout_share:.0%} held out)")
    for col in ("scenario", "design", "challenger", "true difference", "interval (evaluate's)", "paired",
                "non-inferior 2 pts"):
        table.add_column(col)
    jobs = [(s, d, c) for s in args.scenarios for d in DESIGNS for c in CASES]
    for scenario, name, (case, gains, losses, adversarial) in tqdm(jobs, desc="scenario x design x case"):
        sim = simulate_pool(scenario, n=args.pool, seed=1)
        design, rng = make_design(name), np.random.default_rng(0)
        a = sim.correct
        b = challenger_correctness(a, sim.pool.p_correct, int(gains * scale), int(losses * scale), adversarial, rng)
        votes = np.zeros(3)
        for _ in range(args.reps):
            s = design.draw(sim.pool, Sample.empty(), np.zeros(0, bool), args.budget, rng)
            h = s.subset(split_holdout(s, args.holdout_share, rng))
            champ = design.estimate(sim.pool, s, a[s.indices], 0.95)
            chall = design.estimate(sim.pool, h, b[h.indices], 0.95)
            c = paired(design, sim.pool, h, a[h.indices], b[h.indices])
            votes += (chall.accuracy > champ.upper, c.better, c.difference > 0 and c.lower > -0.02)
        star = "*" if name in PPS else ""
        table.add_row(scenario, name, case, f"{100 * (b.mean() - a.mean()):+.1f}", f"{votes[0] / args.reps:.3f}",
                      *(f"{v / args.reps:.3f}{star}" for v in votes[1:]))
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
