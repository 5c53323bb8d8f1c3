"""Benchmark: how much of a drop one cycle regains, per scenario, label budget and retraining method.

Whole cycles through the pipeline's own logic functions (what the kfp components call), on a file
store per scenario:

1. the champion: the cached ``SmallCNN``/``ShadowNet`` of ``benchmarks/online_estimation.py``
   (trained on the 55k train split; trained there if absent), registered with an oracle reference
   whose shifted part *leaves out the held-out corruption types* (``--held-out``), so the sidecar's
   assessor, fitted from it as the sidecar fits it (``daic.sidecar.assessment.AssessorPool``), has
   never seen them;
2. the stream: ``--clean-steps`` clean then ``--drift-steps`` drifted batches of 100 test-split
   inputs, logged through the champion with the assessor's P(correct), as the sidecar logs them
   (:func:`daic.components.testing.operational.write_operational`);
3. per (budget, seed, method) one cycle, earlier cycles' labels removed first: sample-operational
   (the pipeline's default stratified design, 30 % held out) on the drifted window ->
   collect-labels with the simulated labeler -> estimate-accuracy -> train (warm start from the
   champion on Ray Train, with the method's semi-supervised options) -> evaluate (the promotion
   decision);
4. measured on inputs no step saw: *drifted* = test images the stream never drew, corrupted like its
   drifted part with another noise seed (for a mixture: each image with one of the mixture's
   corruptions in turn; only corrupted inputs); *clean* = the clean test split (``--clean-limit``).

Regained = (drifted after - drifted before) / (clean before - drifted before): 1 means the drifted
accuracy is back at the clean one. Methods (``--methods``): ``labels`` (the labelled inputs only,
no augmentation), ``+pseudo`` (and pseudo-labels where P(correct) >= ``--pseudo-threshold``),
``+consistency`` (FixMatch-style), ``+bn`` (AdaBN on pool + base), ``all`` (see
``daic.training.semi_supervised``); ``chain`` (corruption-robust training,
``daic.training.augment``), ``select`` (the train step's default: ``chain`` or no augmentation,
chosen per cycle on training labels held out of both candidates; the row shows the choice),
``augmix``, ``chain+self`` / ``labels+self`` (one self-training round with the challenger as
teacher). Every method runs with ``--operational-share`` (the step's default 0.3; 0 for the runs
before it existed) and collect-labels' ``--train-weighting`` (uniform by default).

Rows print as each cycle finishes; a summary over seeds follows. Sizes, epochs and seeds are flags:
on a shared CPU run a reduced grid and say so (docs/benchmarks.md records the command).

    .venv/bin/python benchmarks/improvement.py --budgets 100,200,400 --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

T0 = 1_700_000_000.0
STEP_SECONDS = 60.0
DEMO_SCENARIO = "mixture"
HELD_OUT = ("fog/5", "glass_blur/4", "dotted_line/4")
METHODS = {
    "labels": {"augment": "off"},
    "+pseudo": {"augment": "off", "pseudo": True},
    "+consistency": {"augment": "off", "consistency": True},
    "+bn": {"augment": "off", "bn": True},
    "all": {"augment": "off", "pseudo": True, "consistency": True, "bn": True},
    "augmix": {"augment": "augmix"},
    "chain": {"augment": "chain"},
    "select": {"augment": "select"},
    "chain+self": {"augment": "chain", "self": True},
    "labels+self": {"augment": "off", "self": True},
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--scenarios", default=",".join((DEMO_SCENARIO, *HELD_OUT)),
                   help="'mixture' (the demo's) and/or corruption/severity entries")
    p.add_argument("--held-out", default=",".join(c.split("/")[0] for c in HELD_OUT),
                   help="corruption types left out of the assessor's shifted reference")
    p.add_argument("--budgets", default="100,200,400")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default="labels,all", help=f"comma list of {', '.join(METHODS)}")
    p.add_argument("--epochs", type=int, default=2, help="retraining epochs (the pipeline's default: 2)")
    p.add_argument("--lr", type=float, default=None, help="retraining learning rate (default: the train step's)")
    p.add_argument("--oversample", type=int, default=None, help="labelled-example repeats (default: the step's)")
    p.add_argument("--augment-share", type=float, default=0.5, help="distorted share of base examples (augmix, chain)")
    p.add_argument("--operational-share", type=float, default=0.3,
                   help="labelled inputs' minimum share of each epoch (the train step's default 0.3; 0: oversample alone)")
    p.add_argument("--base-limit", type=int, default=0, help="base images in retraining (0: all 55,000)")
    p.add_argument("--unlabeled-limit", type=int, default=3000, help="unsampled window inputs for the methods")
    p.add_argument("--pseudo-threshold", type=float, default=0.9)
    p.add_argument("--consistency-weight", type=float, default=1.0)
    p.add_argument("--self-threshold", type=float, default=0.9, help="self-training teacher's confidence")
    p.add_argument("--bn-adapt", default="pool+base", choices=("pool", "pool+base"))
    p.add_argument("--train-weighting", default="uniform", help="collect-labels' train_weighting: "
                   "uniform | inclusion | mispredicted (comma list: one cycle per weighting)")
    p.add_argument("--clean-steps", type=int, default=5)
    p.add_argument("--drift-steps", type=int, default=40)
    p.add_argument("--share", type=float, default=0.8, help="corrupted share of a drifted mixture batch (demo: 0.8)")
    p.add_argument("--holdout", type=int, default=3000, help="drifted evaluation inputs")
    p.add_argument("--clean-limit", type=int, default=0, help="clean test images (0: all 10,000)")
    p.add_argument("--shift-per-condition", type=int, default=50, help="the champion's shifted reference size")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default="/tmp/daic-improvement", help="stores live here (wiped per scenario)")
    p.add_argument("--out", default=None, help="append one JSON line per cycle here")
    return p.parse_args(argv)


def scenario_spec(entry: str, args: argparse.Namespace):
    from daic.data.scenarios import ScenarioSpec

    common = dict(batch_size=100, n_steps=args.clean_steps + args.drift_steps, drift_start=args.clean_steps, seed=0)
    if entry == DEMO_SCENARIO:
        from daic.demo.config import DEFAULT_MIXTURE

        return ScenarioSpec(name="mixture", mixture=DEFAULT_MIXTURE, share=args.share, **common)
    corruption, _, severity = entry.partition("/")
    return ScenarioSpec(name="sudden", corruption=corruption, severity=int(severity or 3), **common)


def drifted_eval(spec, stream, n: int, seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """Source images the stream never drew, corrupted like its drifted part (mixture: in turn)."""
    from daic.components.testing.drifted import drifted_holdout
    from daic.data.corruptions import corrupt
    from daic.data.mnist import load_split

    if spec.name != "mixture":
        return drifted_holdout(spec, stream, n=n, seed=seed)
    source = load_split(spec.source, dataset=spec.dataset)
    unused = np.setdiff1d(np.arange(len(source.labels)), stream.meta["source_index"])
    unused = np.sort(np.random.default_rng(seed).permutation(unused)[:n])
    parts = np.array_split(unused, len(spec.mixture))
    images = [corrupt(source.images[rows], name, sev, seed=seed + k) for k, ((name, sev), rows)
              in enumerate(zip(spec.mixture, parts))]
    return np.concatenate(images), np.concatenate([source.labels[rows] for rows in parts])


def register_champion(store, held_out: tuple[str, ...], shift_per_condition: int) -> tuple[str, dict]:
    """The cached champion in a fresh registry; its shifted reference leaves out ``held_out``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from online_estimation import load_or_train  # the cached benchmark champion, not a copy

    from daic.components.train.registry_access import set_champion
    from daic.data.corruptions import CORRUPTIONS
    from daic.models.card import DataLineage
    from daic.models.reference import ReferenceConfig
    from daic.models.registry import ModelRegistry
    from daic.training.workflow import clean_test_metrics

    model, _ = load_or_train("small_cnn")
    shadow, _ = load_or_train("shadow_net")
    reference = ReferenceConfig(shift_per_condition=shift_per_condition,
                                corruptions=tuple(c for c in CORRUPTIONS if c not in held_out))
    card = ModelRegistry(store, "mnist").register(
        model=model, shadow=shadow, data=DataLineage(dataset="mnist", base_count=55_000),
        metrics=clean_test_metrics(model, shadow, "mnist"), reference_config=reference)
    set_champion(store, "mnist", card.version)
    return card.version, card.metrics


def sidecar_predictor(store, version: str):
    """The champion's outputs and the sidecar's P(correct) for a batch of images."""
    from daic.models.inference import predict
    from daic.models.registry import ModelRegistry
    from daic.sidecar.assessment import AssessorPool

    model, shadow = ModelRegistry(store, "mnist").load_networks(version)
    assessor = AssessorPool(store, "mnist", window=500).get(version)

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        main, side = predict(model, images), predict(shadow, images)
        scores = assessor.score(main.probs, main.embeddings, side.probs)
        return {"probs": main.probs, "embeddings": main.embeddings, "shadow_probs": side.probs,
                "p_correct": scores.p_correct}

    return run


def method_fields(method: str, args: argparse.Namespace) -> dict:
    m = METHODS[method]
    fields = {"augment": m["augment"], "augment_share": args.augment_share,
              "operational_share": args.operational_share}
    if not any(m.get(k) for k in ("pseudo", "consistency", "bn", "self")):
        return fields
    if m.get("self"):
        return {**fields, "unlabeled_limit": args.unlabeled_limit, "self_training_rounds": 1,
                "self_training_threshold": args.self_threshold}
    return {**fields, "unlabeled_limit": args.unlabeled_limit,
            "pseudo_label_threshold": args.pseudo_threshold if m.get("pseudo") else 0.0,
            "consistency_weight": args.consistency_weight if m.get("consistency") else 0.0,
            "bn_adapt": args.bn_adapt if m.get("bn") else "off"}


def one_cycle(store, spec, since: float, budget: int, seed: int, method: str, args,
              weighting: str = "uniform") -> dict:
    """sample -> label -> estimate -> train -> evaluate, as the pipeline runs them."""
    from daic.components.collect_labels import logic as collect
    from daic.components.estimate_accuracy import logic as estimate
    from daic.components.evaluate import logic as evaluate
    from daic.components.sample_operational import logic as sample
    from daic.components.train import logic as train

    for key in store.list("labels/"):  # each cycle starts from the champion with no earlier labels
        store.delete(key)
    cycle = f"b{budget}-s{seed}-{method.strip('+')}-{weighting}"
    started = time.perf_counter()
    sampled = sample.run(store, sample.SampleConfig(budget=budget, seed=seed, since=str(since), cycle=cycle))
    labels = collect.run(store, cycle, collect.CollectConfig(
        backend="simulated", simulated_scenario=json.dumps(asdict(spec)), timeout_s=600, poll_s=0.5,
        train_weighting=weighting))
    est = estimate.run(store, cycle, estimate.EstimateConfig())
    trained = train.run(store, cycle, train.TrainConfig(
        epochs=args.epochs, base_limit=args.base_limit, seed=seed, reference_shift_per_condition=0,
        **({"learning_rate": args.lr} if args.lr else {}),
        **({"operational_oversample": args.oversample} if args.oversample else {}),
        **method_fields(method, args)))
    judged = evaluate.run(store, cycle, trained.version, evaluate.EvaluateConfig(clean_limit=args.clean_limit))
    info = store.get_json(f"cycles/{cycle}/train.json")
    history = (trained.card.get("history") or [{}])[-1]
    chosen = history.get("select_chosen")
    recipe = METHODS[method]["augment"] if chosen is None else ("chain", "off")[int(chosen)]
    return {"recipe": recipe, "select_held_out": history.get("select_held_out", 0),"cycle": cycle, "version": trained.version, "labels": labels.n_labeled, "train_labels": labels.n_train,
            "pool": sampled.pool_size, "unlabeled": info.get("unlabeled_count", 0),
            "offline_estimate": est.estimate.accuracy,
            "promote": judged.decision.promote, "wall_s": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import torch

    torch.set_num_threads(args.threads)
    from daic.components.testing.operational import write_operational
    from daic.data.mnist import load_split
    from daic.data.scenarios import Scenario
    from daic.models.inference import accuracy
    from daic.models.registry import ModelRegistry
    from daic.storage import open_store

    held_out = tuple(s for s in args.held_out.split(",") if s)
    budgets = [int(b) for b in args.budgets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    weightings = [w for w in args.train_weighting.split(",") if w]
    for m in methods:
        if m not in METHODS:
            raise SystemExit(f"--methods: unknown {m!r}; valid: {', '.join(METHODS)}")
    test = load_split("test")
    clean = (test.images[:args.clean_limit], test.labels[:args.clean_limit]) if args.clean_limit \
        else (test.images, test.labels)
    print(f"# improvement benchmark: epochs={args.epochs} base_limit={args.base_limit or 55000} "
          f"operational_share={args.operational_share} "
          f"unlabeled<={args.unlabeled_limit} pseudo>={args.pseudo_threshold} consistency={args.consistency_weight} "
          f"bn={args.bn_adapt}; assessor fitted without {', '.join(held_out)}; stream {args.clean_steps}+"
          f"{args.drift_steps} batches of 100; drifted eval {args.holdout}, clean eval {len(clean[1])}", flush=True)
    header = (f"{'scenario':<16}{'budget':>7}{'seed':>5} {'method':<14}{'labels':>7}{'drift before':>13}"
              f"{'after':>8}{'regained':>9}{'clean before':>13}{'after':>8}{'d clean':>8}{'promote':>8}{'wall s':>8}")
    print(header, flush=True)
    rows = []
    for entry in [s for s in args.scenarios.split(",") if s]:
        spec = scenario_spec(entry, args)
        folder = Path(args.work, entry.replace("/", "-"))
        shutil.rmtree(folder, ignore_errors=True)
        store = open_store(f"file://{folder}")
        version, _metrics = register_champion(store, held_out, args.shift_per_condition)
        stream = write_operational(store, "mnist", Scenario(spec), sidecar_predictor(store, version),
                                   model_version=version, t0=T0, step_seconds=STEP_SECONDS)
        images, labels = drifted_eval(spec, stream, args.holdout)
        registry = ModelRegistry(store, "mnist")
        champion, _ = registry.load_networks(version)
        d0, c0 = accuracy(champion, images, labels), accuracy(champion, *clean)
        since = T0 + spec.drift_start * STEP_SECONDS
        for budget in budgets:
            for seed in seeds:
                for method, weighting in [(m, w) for m in methods for w in weightings]:
                    out = one_cycle(store, spec, since, budget, seed, method, args, weighting)
                    model, _ = registry.load_networks(out["version"])
                    d1, c1 = accuracy(model, images, labels), accuracy(model, *clean)
                    regained = (d1 - d0) / (c0 - d0) if c0 > d0 else float("nan")
                    row = {"scenario": entry, "budget": budget, "seed": seed, "method": method, "weighting": weighting,
                           "drifted_before": d0, "drifted_after": d1, "regained": regained,
                           "clean_before": c0, "clean_after": c1, **out}
                    rows.append(row)
                    shown = method if method != "select" else f"select:{out['recipe']}"
                    shown += "" if weighting == "uniform" else f"/{weighting[:4]}"
                    print(f"{entry:<16}{budget:>7}{seed:>5} {shown:<14}{out['labels']:>7}{100 * d0:>12.2f}%"
                          f"{100 * d1:>7.2f}%{regained:>9.2f}{100 * c0:>12.2f}%{100 * c1:>7.2f}%"
                          f"{100 * (c1 - c0):>+8.2f}{'yes' if out['promote'] else 'no':>8}{out['wall_s']:>8.0f}",
                          flush=True)
                    if args.out:
                        with open(args.out, "a") as fh:
                            fh.write(json.dumps(row) + "\n")
    summary(rows)


def summary(rows: list[dict]) -> None:
    if not rows:
        return
    print("\nsummary (mean over seeds; +- is the standard deviation)")
    print(f"{'scenario':<16}{'budget':>7} {'method':<14}{'n':>3}{'regained':>16}{'d clean pts':>14}{'wall s':>8}")
    keys = sorted({(r["scenario"], r["budget"], r["method"], r.get("weighting", "uniform")) for r in rows},
                  key=lambda k: (k[0], k[1], list(METHODS).index(k[2]), k[3]))
    for scenario, budget, method, weighting in keys:
        sel = [r for r in rows if (r["scenario"], r["budget"], r["method"], r.get("weighting", "uniform"))
               == (scenario, budget, method, weighting)]
        reg = np.array([r["regained"] for r in sel])
        dc = np.array([100 * (r["clean_after"] - r["clean_before"]) for r in sel])
        wall = np.mean([r["wall_s"] for r in sel])
        shown = method if weighting == "uniform" else f"{method}/{weighting[:4]}"
        print(f"{scenario:<16}{budget:>7} {shown:<14}{len(sel):>3}{reg.mean():>9.2f} +- {reg.std():.2f}"
              f"{dc.mean():>+9.2f} +- {dc.std():.2f}{wall:>8.0f}")


if __name__ == "__main__":
    main(sys.argv[1:])
