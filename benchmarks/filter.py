"""The second remedy (issue 21): an input filter in front of the champion, vs retraining, vs both.

Usage (the recorded run is in docs/benchmarks.md):
    nice -n 10 python benchmarks/filter.py [--seeds 0 1 2] [--scenarios mixture impulse_noise motion_blur fog]
        [--store file:///abs/path] [--labels 200] [--adapt-base 8000] [--retrain-base 20000] [--quick]

Per scenario and seed, on one champion (SmallCNN, trained once and cached in ``--store``):

* drifted traffic: ``test[5000:10000]`` with ``--share`` of the inputs corrupted (the demo's
  mixture at its severities, or one corruption type at severity 4 that the filter never saw:
  daic.filters.config.HELD_OUT); the cycle's unlabeled pool: ``test[0:2000]``, drifted the same
  way with another noise seed; its first ``--labels`` inputs are the labeled sample a retrain gets;
* **before**: the champion alone; **filter**: the champion behind the filter (gated and
  always-on; the adopted mode is the better one on drifted traffic among those that cost <= 0.3
  points of clean accuracy), 0 labels -- the generic filter (trained once, before any drift) and
  the filter adapted without labels to the pool at the trigger; **retrain**: daic.training.workflow.retrain
  on the labeled sample (warm start, 2 epochs, on ``--retrain-base`` base images); **both**: the
  retrained challenger behind the adapted filter;
* regained = (accuracy - before) / (clean accuracy - before); clean change on ``test[5000:10000]``
  uncorrupted; time to service = trigger -> the adapted filter registered and named in the
  service record (the transformer picks it up within its ``reload_interval_s``);
* **chosen**: what the cycle's evaluation serves (daic.operators.reconcile.choose_serving) among
  the challenger alone, the challenger behind the filter and the champion behind the filter (the
  champion alone when the filter did not go in), by their accuracy on ``--holdout`` labeled
  held-out draws of the pool (never trained on): the "both" goal is read on this column;
* latency added per request (one image) by the transformer's work (decode, filter, gate, encode:
  ``InputFilter.transform``), p50/p99 over 2,000 requests, one torch thread, and with ``--stack``
  end to end through the local stack (filter transformer vs no transformer).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

EVAL = slice(5000, 10000)
POOL = slice(0, 2000)
SEVERITY = 4
MIXTURE = "mixture"
GOALS = {"filter_regain": 0.40, "both_regain": 0.90, "clean_loss_pts": 0.3, "p99_ms": 5.0}


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", default=None, help="object store URL (default: .daic/bench-cache/filter)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--scenarios", nargs="+", default=[MIXTURE, "impulse_noise", "motion_blur", "fog"])
    p.add_argument("--share", type=float, default=0.8, help="share of drifted inputs (the demo's)")
    p.add_argument("--labels", type=int, default=200, help="labels a retrain gets (the demo's budget)")
    p.add_argument("--holdout", type=int, default=100,
                   help="labeled held-out draws the evaluation chooses what serves on (pool[labels:labels+holdout]; "
                        "the demo's budget 200 at holdout_share 0.3 holds out ~86)")
    p.add_argument("--generic-epochs", type=int, default=3)
    p.add_argument("--generic-base", type=int, default=20000)
    p.add_argument("--generic-corruptions", default=None,
                   help="comma-separated corruptions (and daic.data.fit_shifts families) the generic filter is "
                        "trained on; default FilterConfig's")
    p.add_argument("--adapt-epochs", type=int, default=3, help="at most; the time budget usually stops it first")
    p.add_argument("--adapt-base", type=int, default=8000)
    p.add_argument("--adapt-val", type=int, default=2000, help="clean validation images the adapted filter's gate is calibrated on")
    p.add_argument("--eval-size", type=int, default=5000, help="drifted (and clean) evaluation images, from test[5000:]")
    p.add_argument("--adapt-seconds", type=float, default=35.0,
                   help="wall-clock budget of the label-free adaptation (FilterConfig.max_seconds)")
    p.add_argument("--no-readapt", action="store_true",
                   help="'both': keep the champion's filter instead of re-adapting it to the challenger")
    p.add_argument("--retrain-base", type=int, default=20000)
    p.add_argument("--clean-tolerance", type=float, default=0.01,
                   help="evaluate's clean_tolerance (the pipeline's default 0.01; the issue's bound is 0.003)")
    p.add_argument("--retrain-epochs", type=int, default=2)
    p.add_argument("--no-retrain", action="store_true")
    p.add_argument("--teacher-share", type=float, default=0.2,
                   help="with --teacher: pseudo-labels repeated to at least this share of the base part of an epoch")
    p.add_argument("--teacher", type=float, default=None, metavar="CONFIDENCE",
                   help="also retrain with pseudo-labels from the champion behind the adapted filter (daic.filters."
                        "teacher) on the unlabelled rest of the pool, where its confidence reaches CONFIDENCE "
                        "('teacher' columns: that challenger alone, behind the filter, and the cycle's choice with it)")
    p.add_argument("--train-filtered", action="store_true",
                   help="ablation: also retrain on the labeled sample passed through the adapted filter (its adopted "
                        "mode) and measure that challenger behind the filter ('trained filtered' column)")
    p.add_argument("--rechoose", type=float, nargs="+", default=None, metavar="CLEAN_TOLERANCE",
                   help="no training: the choice of what serves again, at these clean tolerances, on the cycles of "
                        "an earlier run cached in --store (their challengers and adapted filters)")
    p.add_argument("--stack", action="store_true", help="also measure end-to-end latency through the local stack")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    p.add_argument("--ablate", nargs="*", default=None, metavar="FILTER_VERSION",
                   help="only the inference ablation of a registered filter (default: the cached generic one): "
                        "champion alone, forced re-centring, re-centring as a search candidate, no search, on clean "
                        "validation images and every corruption at severity 4 (+ the mixture); --eval-size images each")
    p.add_argument("--latency", default=None, metavar="FILTER_VERSION",
                   help="only the latency added per request by a registered filter (gated and always-on, "
                        "2,000 requests of one image, clean then all drifted by the mixture, one torch thread), "
                        "with the load average; pin it to a core of its own (taskset -c 1) as a transformer's "
                        "container would have")
    p.add_argument("--sidecar", nargs=2, default=None, metavar=("FILTER_VERSION", "GATE"),
                   help="only the sidecar's estimate behind a registered filter: the window estimate of the "
                        "champion's own assessor vs the wrapped assessor (daic.filters.assessor) vs the wrapped "
                        "per-input scores under the own window model, against the truth, on test[5000:7000] "
                        "(mixture, impulse_noise, fog at --share, and clean)")
    p.add_argument("--abstain", nargs="+", default=None, metavar="FILTER_VERSION [GATE]",
                   help="only selective accuracy and coverage behind a registered filter (issue 21, item 4): "
                        "inputs whose wrapped-assessor P(correct) is below --bounds are abstained on; clean and "
                        "drifted (--scenarios at --share) test[5000:5000+--eval-size]")
    p.add_argument("--bounds", type=float, nargs="+", default=[0.3, 0.5, 0.7], help="abstain bounds (--abstain)")
    return p.parse_args()


def drift(images: np.ndarray, scenario: str, share: float, seed: int) -> np.ndarray:
    """``share`` of the inputs corrupted: the demo's mixture spread evenly, or one type at SEVERITY."""
    from daic.data.corruptions import corrupt
    from daic.demo.config import DEFAULT_MIXTURE

    rng = np.random.default_rng([seed, 21])
    out = np.array(images, dtype=np.float32, copy=True)
    hit = np.flatnonzero(rng.random(len(out)) < share)
    parts = list(DEFAULT_MIXTURE) if scenario == MIXTURE else [(scenario, SEVERITY)]
    for i, (name, sev) in enumerate(parts):
        idx = hit[i::len(parts)]
        if len(idx):
            out[idx] = corrupt(out[idx], name, int(sev), seed=seed * 17 + i)
    return out


def champion(store, args) -> str:
    from daic.models.registry import ModelRegistry
    from daic.training.config import TrainConfig
    from daic.training.workflow import train_and_register

    registry = ModelRegistry(store, "mnist")
    if registry.champion_pointer() is not None:
        return registry.champion()
    config = TrainConfig(num_workers=1, epochs=1 if args.quick else 3, base_limit=2000 if args.quick else None)
    return train_and_register(store, "mnist", config, promote="always").version


def generic_filter(store, version: str, args):
    from daic.filters.config import TRAIN_CORRUPTIONS, FilterConfig
    from daic.filters.registry import FilterRegistry
    from daic.filters.workflow import train_filter

    corruptions = tuple(args.generic_corruptions.split(",")) if args.generic_corruptions else TRAIN_CORRUPTIONS
    registry = FilterRegistry(store, "mnist")
    for card in registry.cards():
        if card.data.notes.get("purpose") == "generic" and card.train_config.get("classifier_version") == version \
                and card.train_config.get("base_limit") == args.generic_base and card.train_config.get("epochs") == args.generic_epochs \
                and card.train_config.get("canonical") is True \
                and card.train_config.get("align_margin") == FilterConfig.model_fields["align_margin"].default \
                and card.train_config.get("recentre") == FilterConfig.model_fields["recentre"].default \
                and tuple(card.train_config.get("corruptions") or ()) == corruptions:
            return card
    config = FilterConfig(classifier_version=version, epochs=args.generic_epochs, base_limit=args.generic_base,
                          corruptions=corruptions)
    return train_filter(store, config, notes={"purpose": "generic"}).card


def adopt_mode(card, classifier, net, images, labels) -> str:
    """The remedy step's rule (daic.filters.remedy): among the gate modes whose clean validation
    accuracy (the card's) is at most 0.3 points below the classifier's, the better one on the
    cycle's labeled sample."""
    m, thr = card.metrics, float(card.metrics["gate_threshold"])
    allowed = [mode for mode in ("gated", "always")
               if (m["val_accuracy_alone"] - m[f"val_accuracy_{mode}"]) * 100 <= GOALS["clean_loss_pts"]] or ["gated"]
    from daic.filters.apply import predictions_by_mode

    acc = {mode: float((p == labels).mean()) for mode, (p, _) in
           predictions_by_mode(classifier, net, images, thr, tuple(allowed)).items()}
    return max(allowed, key=acc.get)


def by_mode(classifier, net, images, labels, threshold) -> dict[str, float]:
    from daic.filters.apply import predictions_by_mode

    return {m: float((p == labels).mean()) for m, (p, _) in predictions_by_mode(classifier, net, images, threshold).items()}


def accuracy_behind(classifier, net, images, labels, mode, threshold) -> float:
    from daic.filters.apply import wrapped_predictions

    return float((wrapped_predictions(classifier, net, images, mode, threshold)[0] == labels).mean())


#: evaluate's clean check (components/evaluate: the clean test split) stands in here as test[2000:5000],
#: clean images neither the pool (test[0:2000]) nor the evaluation images (test[5000:]) use
CLEAN_CHECK = slice(2000, 5000)


def clean_check_images():
    from daic.data.mnist import load_split

    test = load_split("test")
    return np.asarray(test.images[CLEAN_CHECK], np.float32), np.asarray(test.labels[CLEAN_CHECK])


def choose(r, classifier, net, mode, thr, challenger, both_net, both_mode, b_thr, hx, hy, sx, sy,
           clean_tolerance: float = 0.01) -> dict:
    """The cycle's choice of what serves (daic.operators.reconcile.choose_serving) on the held-out
    draws ``hx, hy``; the filter is in service when it beat the champion on the labeled sample
    ``sx, sy`` (decide_remedy's rule). As evaluate does, a challenger variant that loses more than
    ``clean_tolerance`` on the clean check images is passed over while the other keeps clean, and the
    chosen one is promoted only within it. Returns the chosen combination and its drifted/clean accuracy."""
    from daic.components.evaluate.decision import PromotionRule
    from daic.models.inference import predict
    from daic.operators.reconcile import choose_serving, decide_remedy

    def held(model, filt=None, m=None, t=None, x=hx, y=hy):
        return accuracy_behind(model, filt, x, y, m, t) if filt is not None else float(
            (predict(model, x).predictions == y).mean())

    cx, cy = clean_check_images()
    champ_clean = held(classifier, x=cx, y=cy)
    alone_clean, both_clean = held(challenger, x=cx, y=cy), held(challenger, both_net, both_mode, b_thr, x=cx, y=cy)
    rule = PromotionRule(clean_tolerance)
    flags = {"alone_keeps_clean": rule.keeps_clean(alone_clean, champ_clean),
             "filtered_keeps_clean": rule.keeps_clean(both_clean, champ_clean)}
    sample_champ = float((predict(classifier, sx).predictions == sy).mean())
    sample_filter = accuracy_behind(classifier, net, sx, sy, mode, thr)
    served = decide_remedy("both", drop_confirmed=True, traffic_clean=False, filter_in_service=False,
                           champion_accuracy=sample_champ, filter_accuracy=sample_filter).filter == "deploy"
    c = choose_serving(champion=held(classifier), wrapped_champion=held(classifier, net, mode, thr),
                       challenger=held(challenger), challenger_filtered=held(challenger, both_net, both_mode, b_thr),
                       filter_in_service=served, **flags)
    serve = c.serve
    if c.promotes and not flags["filtered_keeps_clean" if c.filtered else "alone_keeps_clean"]:
        serve = "champion+filter" if served else "champion"  # the clean rule refuses the promotion
    pick = {"challenger": ("retrain", "retrain_clean"), "challenger+filter": ("both", "both_clean"),
            "champion+filter": ("filter", "filter_clean"), "champion": ("before", "clean")}[serve]
    return {"chosen": serve, "chosen_acc": r[pick[0]], "chosen_clean": r[pick[1]]}


def with_teacher(store, args, r, cycle, version, labels_prefix, classifier, net, filter_version, adopt, thr, pool,
                 pool_y, x, y, clean_x, hx, hy, sample_x, sample_y) -> dict:
    """The same retrain plus pseudo-labels from the champion behind the adapted filter (its adopted
    mode) on the pool's unlabelled rest (neither the labeled sample nor the held-out draws), that
    challenger alone and behind the same filter, and the cycle's choice among them."""
    from daic.filters.registry import FilterRegistry
    from daic.filters.teacher import teacher_arrays
    from daic.models.inference import predict
    from daic.models.registry import ModelRegistry
    from daic.training.workflow import retrain

    rest = slice(args.labels + args.holdout, None)
    arrays = teacher_arrays(classifier, net, pool[rest], adopt, thr)
    kept = arrays["teacher_confidence"] >= args.teacher
    store.put_arrays(f"cycles/{cycle}/teacher.npz", **arrays)
    out = retrain(store, "mnist", version, labels_prefix, num_workers=1, epochs=args.retrain_epochs,
                  base_limit=args.retrain_base, test_limit=1000, lineage={"cycle": cycle + "-t"},
                  unlabeled_key=f"cycles/{cycle}/teacher.npz", pseudo_label_threshold=args.teacher,
                  pseudo_label_score="teacher", pseudo_label_share=args.teacher_share)
    student, _ = ModelRegistry(store, "mnist").load_networks(out.version)
    s_net = FilterRegistry(store, "mnist").load_filter(filter_version, classifier=student)
    rr = {**r, "retrain": float((predict(student, x).predictions == y).mean()),
          "retrain_clean": float((predict(student, clean_x).predictions == y).mean()),
          "both": accuracy_behind(student, s_net, x, y, adopt, thr),
          "both_clean": accuracy_behind(student, s_net, clean_x, y, adopt, thr)}
    c = choose(rr, classifier, net, adopt, thr, student, s_net, adopt, thr, hx, hy, sample_x, sample_y,
               args.clean_tolerance)
    truth = pool_y[rest][kept]
    return {"teacher_pseudo": int(kept.sum()),
            "teacher_pseudo_acc": float((arrays["teacher_labels"][kept] == truth).mean()) if kept.any() else 0.0,
            "retrain_t": rr["retrain"], "retrain_t_clean": rr["retrain_clean"], "both_t": rr["both"],
            "both_t_clean": rr["both_clean"], "chosen_t": c["chosen"], "chosen_t_acc": c["chosen_acc"],
            "chosen_t_clean": c["chosen_clean"]}


def rechoose(store, args, console) -> None:
    """The serving choice again, at each clean tolerance of ``--rechoose``, on the cycles an earlier
    run left in the store: per scenario and seed its last challenger (model card lineage
    ``bench-<scenario>-<seed>``) and its last adapted filter (filter card notes cycle, no purpose),
    the same drifted/pool/held-out images as that run."""
    import re

    from rich.table import Table

    from daic.data.mnist import load_split
    from daic.filters.registry import FilterRegistry
    from daic.models.inference import predict
    from daic.models.registry import ModelRegistry

    models, filters = ModelRegistry(store, "mnist"), FilterRegistry(store, "mnist")
    classifier, _ = models.load_networks(models.champion())
    challengers = {}
    for card in models.cards():
        m = re.search(r"'cycle': 'bench-(\w+?)-(\d+)'", str(card.data.model_dump()))
        if m:
            challengers[(m.group(1), int(m.group(2)))] = card.version  # cards are in version order: the last wins
    adapted = {}
    for card in filters.cards():
        m = re.fullmatch(r"bench-(\w+?)-(\d+)", str(card.data.notes.get("cycle", "")))
        if m and not card.data.notes.get("purpose"):
            adapted[(m.group(1), int(m.group(2)))] = card
    test = load_split("test")
    clean_x, y = np.asarray(test.images[EVAL], np.float32)[:args.eval_size], np.asarray(test.labels[EVAL])[:args.eval_size]
    pool_clean, pool_y = np.asarray(test.images[POOL], np.float32), np.asarray(test.labels[POOL])
    clean_alone = float((predict(classifier, clean_x).predictions == y).mean())
    rows = []
    for scenario in args.scenarios:
        for seed in args.seeds:
            if (scenario, seed) not in challengers or (scenario, seed) not in adapted:
                console.print(f"{scenario} seed {seed}: no cached cycle in the store, skipped")
                continue
            card = adapted[(scenario, seed)]
            challenger, _ = models.load_networks(challengers[(scenario, seed)])
            net, thr = filters.load_filter(card.version, classifier=classifier), float(card.metrics["gate_threshold"])
            both_net = filters.load_filter(card.version, classifier=challenger)
            x, pool = drift(clean_x, scenario, args.share, seed), drift(pool_clean, scenario, args.share, seed + 1000)
            sx, sy = pool[:args.labels], pool_y[:args.labels]
            hx, hy = pool[args.labels:args.labels + args.holdout], pool_y[args.labels:args.labels + args.holdout]
            mode = adopt_mode(card, classifier, net, sx, sy)
            r = {"scenario": scenario, "seed": seed, "clean": clean_alone,
                 "before": float((predict(classifier, x).predictions == y).mean()),
                 "filter": accuracy_behind(classifier, net, x, y, mode, thr),
                 "filter_clean": accuracy_behind(classifier, net, clean_x, y, mode, thr),
                 "retrain": float((predict(challenger, x).predictions == y).mean()),
                 "retrain_clean": float((predict(challenger, clean_x).predictions == y).mean()),
                 "both": accuracy_behind(challenger, both_net, x, y, mode, thr),
                 "both_clean": accuracy_behind(challenger, both_net, clean_x, y, mode, thr)}
            for tol in args.rechoose:
                c = choose(r, classifier, net, mode, thr, challenger, both_net, mode, thr, hx, hy, sx, sy, tol)
                rows.append({**r, "tolerance": tol, **c})
            console.print(f"{scenario} seed {seed}: challenger {challengers[(scenario, seed)]}, filter {card.version} "
                          f"\\[{mode}]: " + ", ".join(f"{row['tolerance']}: {row['chosen']}" for row in rows
                                                    if row["scenario"] == scenario and row["seed"] == seed))

    def regain(acc, r):
        return (acc - r["before"]) / (r["clean"] - r["before"])

    table = Table(title=f"the serving choice again on the cached cycles ({args.eval_size} evaluation images, "
                        f"{args.holdout} held-out draws, clean check on test[2000:5000])")
    for col in ("scenario", "clean tolerance", "seeds", "chosen [per seed]", "regained (chosen)", "min",
                "clean change (chosen)", "worst"):
        table.add_column(col)
    for scenario in args.scenarios:
        for tol in args.rechoose:
            rs = [r for r in rows if r["scenario"] == scenario and r["tolerance"] == tol]
            if not rs:
                continue
            reg = [regain(r["chosen_acc"], r) for r in rs]
            cc = [100 * (r["chosen_clean"] - r["clean"]) for r in rs]
            table.add_row(scenario, f"{100 * tol:.1f} pts", str(len(rs)), ",".join(r["chosen"] for r in rs),
                          f"{100 * np.mean(reg):.0f}%", f"{100 * min(reg):.0f}%", f"{np.mean(cc):+.2f} pts",
                          f"{min(cc):+.2f}")
    console.print(table)


def latency(net, threshold: float, n: int, gate: str = "gated", scenario: str | None = None) -> dict[str, float]:
    """Per-request ms of the transformer's work at one image: decode+filter+gate+encode, minus a
    decode+encode pass-through (what a transformer costs without the filter). ``scenario``: every
    image drifted (the gate then sends most through the filter); None: clean test images."""
    import torch

    from daic.serving.filter import InputFilter, ServedFilter

    torch.set_num_threads(1)
    from daic.data.mnist import load_split

    images = load_split("test").images[:n].astype(np.float32)
    if scenario is not None:
        images = drift(images, scenario, 1.0, seed=0)
    images = images.astype(np.float64).round(4)
    on, off = InputFilter(), InputFilter()
    on._served = ServedFilter("bench", net, gate, threshold)
    off._served = ServedFilter(None, None, "off", 0.0)
    times = {"filter": [], "pass": []}
    for i in range(n):
        req = {"data": {"ndarray": images[i:i + 1].tolist()}}
        for key, server in (("pass", off), ("filter", on)):
            t = time.perf_counter()
            server.transform(req)
            times[key].append((time.perf_counter() - t) * 1000)
    f, p = np.asarray(times["filter"]), np.asarray(times["pass"])
    return {"p50": float(np.percentile(f, 50) - np.percentile(p, 50)),
            "p99": float(np.percentile(f, 99) - np.percentile(p, 99)),
            "filter_p50": float(np.percentile(f, 50)), "filter_p99": float(np.percentile(f, 99))}


def stack_latency(store, n: int) -> dict[str, float]:
    """End to end through the local stack: filter transformer in front vs the model alone."""
    import requests

    from daic.data.mnist import load_split
    from daic.serving.filter import FILTER_CLASS
    from daic.serving.stack import LocalStack, StackConfig

    images = load_split("test").images[:n]
    base = Path(".daic/bench-cache/filter/stack")
    out = {}
    for label, cls in (("model", None), ("filter", FILTER_CLASS)):
        config = StackConfig(store_url=store.url, gateway_port=18403, model_port=19400, model_metrics_port=16400,
                             sidecar_port=18400, sidecar_ingest_port=18401, transformer_port=19401,
                             transformer_metrics_port=16401, state_dir=base / label / "state",
                             log_dir=base / label / "logs", transformer_class=cls,
                             transformer_parameters={"model_name": "mnist"} if cls else {})
        times = []
        with LocalStack(config) as running, requests.Session() as s:
            url = running.gateway_url + "/api/v1.0/predictions"
            for i in range(n):
                body = {"data": {"ndarray": np.round(images[i:i + 1].astype(np.float64), 4).tolist()}}
                t = time.perf_counter()
                r = s.post(url, json=body, timeout=30)
                times.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200, r.text
        times = np.asarray(times[20:])  # first requests warm the workers
        out[label] = (float(np.percentile(times, 50)), float(np.percentile(times, 99)))
    return {"p50": out["filter"][0] - out["model"][0], "p99": out["filter"][1] - out["model"][1],
            "model_p50": out["model"][0], "model_p99": out["model"][1],
            "with_filter_p50": out["filter"][0], "with_filter_p99": out["filter"][1]}


def ablate(store, version: str, filter_version: str, n: int, console) -> None:
    """Accuracy (always-on) of the champion behind one filter at inference, stage by stage."""
    from daic.data.corruptions import CORRUPTIONS, corrupt
    from daic.data.mnist import load_split
    from daic.filters.apply import apply_filter
    from daic.filters.registry import FilterRegistry
    from daic.models.inference import predict
    from daic.models.registry import ModelRegistry

    classifier, _ = ModelRegistry(store, "mnist").load_networks(version)
    net = FilterRegistry(store, "mnist").load_filter(filter_version, classifier=classifier)
    aligner = net._aligner
    val, test = load_split("val"), load_split("test")
    x, y = np.asarray(test.images[5000:5000 + n], np.float32), np.asarray(test.labels[5000:5000 + n])
    sets = {"clean (val)": (np.asarray(val.images[:n], np.float32), np.asarray(val.labels[:n])),
            "mixture": (drift(x, MIXTURE, 1.0, 3), y)}
    sets.update({f"{c}/{SEVERITY}": (corrupt(x, c, SEVERITY, seed=3), y) for c in CORRUPTIONS})

    def acc(images, labels) -> str:
        return f"{100 * float((predict(classifier, images).predictions == labels).mean()):.1f}"

    console.print(f"filter {filter_version} in front of mnist/{version}, always-on, {n} images per row "
                  "(mixture: every input drifted); columns: alone | forced re-centring + rotations | "
                  "re-centring as a candidate + rotations | canonical form only (forced re-centring, no search)")
    for name, (images, labels) in sets.items():
        cols = [acc(images, labels)]
        for search, attach in ((0.0, True), (1.0, True), (1.0, False)):
            net.recentre_search.fill_(search)
            net._aligner = aligner if attach else None
            cols.append(acc(apply_filter(net, images), labels))
        console.print(f"| {name} | " + " | ".join(cols) + " |")
    thr = float(FilterRegistry(store, "mnist").card(filter_version).metrics["gate_threshold"])
    for label, search, attach in (("forced re-centring + rotations", 0.0, True),
                                  ("re-centring as a candidate + rotations", 1.0, True),
                                  ("canonical form only (forced re-centring, no search)", 1.0, False)):
        net.recentre_search.fill_(search)
        net._aligner = aligner if attach else None
        lat = latency(net, thr, 1000)
        console.print(f"latency added per request, {label}: p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms "
                      f"(whole transform p50 {lat['filter_p50']:.2f}, p99 {lat['filter_p99']:.2f}); "
                      f"load average {os.getloadavg()[0]:.1f}")


def sidecar(store, version: str, filter_version: str, gate: str, share: float, console) -> None:
    """How far the sidecar's window estimate is from the truth behind the filter, per assessor."""
    from daic.data.mnist import load_split
    from daic.filters.apply import apply_filter, gate as gated
    from daic.filters.assessor import wrapped_references
    from daic.filters.registry import FilterRegistry
    from daic.models import assessor_store
    from daic.models.reference import oracle_reference
    from daic.models.registry import ModelRegistry
    from daic.serving.loading import load_oracle_reference

    model, shadow = ModelRegistry(store, "mnist").load_networks(version)
    own = assessor_store.load(store, "mnist", version) or assessor_store.fit(*load_oracle_reference(store, "mnist", version))
    filters = FilterRegistry(store, "mnist")
    net = filters.load_filter(filter_version, classifier=model)
    thr = float(filters.card(filter_version).metrics["gate_threshold"])
    t = time.perf_counter()
    wrapped = assessor_store.fit(*wrapped_references(model, shadow, net, gate, thr))
    console.print(f"wrapped assessor of {version} behind {filter_version} ({gate}): references + fit "
                  f"{time.perf_counter() - t:.0f} s at load {os.getloadavg()[0]:.1f}")
    test = load_split("test")
    x0, y = np.asarray(test.images[5000:7000], np.float32), np.asarray(test.labels[5000:7000])
    console.print("| traffic | truth behind the filter | own assessor | wrapped assessor | wrapped scores, own window model |")
    for scenario in ("clean", MIXTURE, "impulse_noise", "fog"):
        x = x0 if scenario == "clean" else drift(x0, scenario, share, 5)
        ref = oracle_reference(model, shadow, gated(net, x, apply_filter(net, x), gate, thr)[0], y)
        truth = float((ref.probs.argmax(1) == y).mean())
        cols = []
        for scorer, windowed in ((own, own), (wrapped, wrapped), (wrapped, own)):
            estimator = windowed.new_estimator()
            estimator.update(scorer.score(ref.probs, ref.embeddings, ref.shadow_probs), time.time())
            cols.append(f"{100 * estimator.estimate(time.time()).accuracy:.2f} ({100 * (estimator.estimate(time.time()).accuracy - truth):+.1f})")
        console.print(f"| {scenario} | {100 * truth:.2f} | " + " | ".join(cols) + " |")


def abstain(store, filter_version: str, gate: str, scenarios, share: float, n: int, bounds, console) -> None:
    """Coverage and selective accuracy of the wrapped model when inputs with P(correct) < bound are
    abstained on (daic.serving.abstain), P(correct) from the wrapped assessor as the sidecar scores it."""
    from daic.data.mnist import load_split
    from daic.filters.apply import apply_filter, gate as gated
    from daic.filters.assessor import load_wrapped_assessor, wrapped_references
    from daic.filters.registry import FilterRegistry
    from daic.models import assessor_store
    from daic.models.reference import oracle_reference
    from daic.models.registry import ModelRegistry
    from daic.serving.abstain import abstain_mask, selective

    filters = FilterRegistry(store, "mnist")
    version = filters.wraps(filter_version)
    model, shadow = ModelRegistry(store, "mnist").load_networks(version)
    net = filters.load_filter(filter_version, classifier=model)
    thr = float(filters.card(filter_version).metrics["gate_threshold"])
    t = time.perf_counter()
    wrapped = load_wrapped_assessor(store, "mnist", filter_version, gate)
    how = "stored"
    if wrapped is None:
        wrapped, how = assessor_store.fit(*wrapped_references(model, shadow, net, gate, thr)), "fitted here"
    console.print(f"classifier {version} behind filter {filter_version} ({gate}); wrapped assessor {how} in "
                  f"{time.perf_counter() - t:.0f} s at load {os.getloadavg()[0]:.1f}")
    test = load_split("test")
    x0, y = np.asarray(test.images[5000:5000 + n], np.float32), np.asarray(test.labels[5000:5000 + n])
    head = " | ".join(f"bound {b:g}: coverage, selective acc., acc. of abstained" for b in bounds)
    console.print(f"| traffic | accuracy behind the filter (all answered) | {head} |")
    console.print("|---|---|" + "---|" * len(bounds))
    for scenario in ["clean", *scenarios]:
        x = x0 if scenario == "clean" else drift(x0, scenario, share, 5)
        ref = oracle_reference(model, shadow, gated(net, x, apply_filter(net, x), gate, thr)[0], y)
        correct = ref.probs.argmax(1) == y
        p = wrapped.score(ref.probs, ref.embeddings, ref.shadow_probs).p_correct
        cols = []
        for b in bounds:
            held = abstain_mask(p, b)
            coverage, sel = selective(correct, ~held)
            rest = f"{100 * correct[held].mean():.1f}" if held.any() else "-"
            cols.append(f"{100 * coverage:.1f} %, {100 * sel:.2f}, {rest}")
        console.print(f"| {scenario} | {100 * correct.mean():.2f} | " + " | ".join(cols) + " |")


def abstain_latency(store, n: int, console) -> None:
    """What abstaining adds per request (one image), through the local stack (model + sidecar, no filter):
    the model server's extra work, ``Abstainer.tag`` (post its response to the sidecar's /assess, get
    P(correct), tag), timed alone; and end to end, abstaining on vs off (policy record, bound 0.5) in
    alternating blocks of 100 requests so load changes fall on both."""
    import copy

    import requests

    from daic.data.mnist import load_split
    from daic.serving.abstain_policy import sync_policy
    from daic.serving.abstainer import Abstainer
    from daic.serving.stack import LocalStack, StackConfig

    images = load_split("test").images[:n]
    bodies = [{"data": {"ndarray": np.round(images[i:i + 1].astype(np.float64), 4).tolist()}} for i in range(n)]
    base = Path(".daic/bench-cache/filter/stack-abstain")
    config = StackConfig(store_url=store.url, gateway_port=18403, model_port=19400, model_metrics_port=16400,
                         sidecar_port=18400, sidecar_ingest_port=18401, state_dir=base / "state",
                         log_dir=base / "logs", deployment="bench-abstain", reload_interval_s=0.2)
    times: dict[bool, list[float]] = {True: [], False: []}
    decided = asked = 0
    try:
        with LocalStack(config) as running, requests.Session() as s:
            url = running.gateway_url + "/api/v1.0/predictions"
            for block in range(2 * max(1, n // 100)):
                on = block % 2 == 0
                sync_policy(store, "mnist", on, 0.5, "benchmarks/filter.py")
                deadline = time.monotonic() + 300
                while True:  # until the model server follows the record (and, on, the sidecar's assessor is loaded)
                    tags = s.post(url, json=bodies[0], timeout=30).json()["meta"]["tags"]
                    if (tags.get("daic.abstain.status") == "decided") if on else ("daic.abstain" not in tags):
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit(f"abstaining never turned {'on' if on else 'off'}: {tags.get('daic.abstain.status')}")
                for body in bodies[(block // 2) * 100:(block // 2 + 1) * 100]:
                    t = time.perf_counter()
                    r = s.post(url, json=body, timeout=30)
                    times[on].append((time.perf_counter() - t) * 1000)
                    assert r.status_code == 200, r.text
                    asked += on
                    decided += on and r.json()["meta"]["tags"].get("daic.abstain.status") == "decided"
            # The model server's added work alone: its response (abstaining off now) through Abstainer.tag.
            response = s.post(config.model_url + "/api/v1.0/predictions", json=bodies[0], timeout=30).json()
            client = Abstainer("0.5", f"{config.sidecar_ingest_url}/assess", 0.05)
            tag_ms, tag_decided = [], 0
            for _ in range(n):
                r = copy.deepcopy(response)
                t = time.perf_counter()
                client.tag(r, 1)
                tag_ms.append((time.perf_counter() - t) * 1000)
                tag_decided += r["meta"]["tags"]["daic.abstain.status"] == "decided"  # else timed out (50 ms)
    finally:
        sync_policy(store, "mnist", False, 0.5, "benchmarks/filter.py")
    on, off, tag = (np.percentile(np.asarray(v), [50, 99]) for v in (times[True], times[False], tag_ms))
    console.print(f"abstaining, one image a request, load average {os.getloadavg()[0]:.1f}: the model server's added "
                  f"work (Abstainer.tag: /assess round trip + decision) p50 {tag[0]:.2f} ms, p99 {tag[1]:.2f} ms "
                  f"({tag_decided} of {n} decided, the rest past the 50 ms timeout); end to end through the local stack, on p50 {on[0]:.2f} / p99 {on[1]:.2f} ms ({decided} of "
                  f"{asked} decided) vs off p50 {off[0]:.2f} / p99 {off[1]:.2f} ms")


def main() -> None:
    args = _parse()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.quick:
        args.generic_base, args.adapt_base, args.retrain_base, args.generic_epochs = 2000, 1000, 1000, 1
    from rich.console import Console
    from rich.table import Table

    from daic.data.mnist import load_split
    from daic.filters.config import FilterConfig
    from daic.filters.registry import FilterRegistry, FilterService, write_service
    from daic.filters.workflow import train_filter
    from daic.models.inference import predict
    from daic.models.registry import ModelRegistry
    from daic.storage import open_store
    from daic.training.workflow import retrain

    console = Console(width=250)
    url = args.store or f"file://{Path('.daic/bench-cache/filter' + ('-quick' if args.quick else '')).resolve()}"
    store = open_store(url)
    t0 = time.perf_counter()
    version = champion(store, args)
    classifier, _ = ModelRegistry(store, "mnist").load_networks(version)
    if args.ablate is not None:
        ablate(store, version, args.ablate[0] if args.ablate else generic_filter(store, version, args).version,
               args.eval_size, console)
        return
    if args.latency is not None:
        filters = FilterRegistry(store, "mnist")
        net = filters.load_filter(args.latency, classifier=classifier)
        thr = float(filters.card(args.latency).metrics["gate_threshold"])
        for traffic in (None, MIXTURE):
            for gate in ("gated", "always"):
                before = os.getloadavg()[0]
                lat = latency(net, thr, 2000, gate, scenario=traffic)
                console.print(f"filter {args.latency} {gate}, {traffic or 'clean'} traffic: added p50 {lat['p50']:.2f} ms, "
                              f"p99 {lat['p99']:.2f} ms (whole transform p50 {lat['filter_p50']:.2f}, p99 "
                              f"{lat['filter_p99']:.2f}); load average {before:.1f} before, {os.getloadavg()[0]:.1f} after")
        return
    if args.sidecar is not None:
        sidecar(store, version, args.sidecar[0], args.sidecar[1], args.share, console)
        return
    if args.rechoose is not None:
        rechoose(store, args, console)
        return
    if args.abstain is not None:
        if len(args.abstain) > 2:
            raise SystemExit("--abstain takes FILTER_VERSION and optionally GATE (gated or always)")
        abstain(store, args.abstain[0], args.abstain[1] if len(args.abstain) > 1 else "gated", args.scenarios,
                args.share, args.eval_size, args.bounds, console)
        if args.stack:
            abstain_latency(store, 1000, console)
        return
    generic = generic_filter(store, version, args)
    filters = FilterRegistry(store, "mnist")
    generic_net = filters.load_filter(generic.version)
    console.print(f"champion {version}; generic filter {generic.version} (clean val: alone "
                  f"{generic.metrics['val_accuracy_alone']:.4f}, gated {generic.metrics['val_accuracy_gated']:.4f}, "
                  f"always {generic.metrics['val_accuracy_always']:.4f}); setup {time.perf_counter() - t0:.0f} s")
    test = load_split("test")
    clean_x, y = np.asarray(test.images[EVAL], np.float32), np.asarray(test.labels[EVAL])
    pool_clean, pool_y = np.asarray(test.images[POOL], np.float32), np.asarray(test.labels[POOL])
    clean_x, y = clean_x[:500 if args.quick else args.eval_size], y[:500 if args.quick else args.eval_size]
    clean_alone = float((predict(classifier, clean_x).predictions == y).mean())
    rows = []
    for scenario in args.scenarios:
        for seed in args.seeds:
            x = drift(clean_x, scenario, args.share, seed)
            pool = drift(pool_clean, scenario, args.share, seed + 1000)
            cycle = f"bench-{scenario}-{seed}"
            store.put_arrays(f"cycles/{cycle}/pool.npz", images=pool)
            before = float((predict(classifier, x).predictions == y).mean())
            r = {"scenario": scenario, "seed": seed, "clean": clean_alone, "before": before}
            sample_x, sample_y = pool[:args.labels], pool_y[:args.labels]  # the cycle's labeled sample
            g_thr = float(generic.metrics["gate_threshold"])
            g_mode = adopt_mode(generic, classifier, generic_net, sample_x, sample_y)
            r["generic"] = accuracy_behind(classifier, generic_net, x, y, g_mode, g_thr)
            r["generic_clean"] = accuracy_behind(classifier, generic_net, clean_x, y, g_mode, g_thr)
            r["generic_mode"] = g_mode
            # Timed: the trigger -> label-free adaptation (time-bounded) on Ray Train, its gate calibrated and
            # registered, its mode chosen on the labeled sample, the service record written.
            trigger = time.perf_counter()
            adapted = train_filter(store, FilterConfig(classifier_version=version, warm_start_from=generic.version,
                                                       pool_key=f"cycles/{cycle}/pool.npz", epochs=args.adapt_epochs,
                                                       base_limit=args.adapt_base, seed=seed, val_limit=args.adapt_val,
                                                       max_seconds=args.adapt_seconds),
                                   notes={"cycle": cycle})
            net, thr = filters.load_filter(adapted.version, classifier=classifier), adapted.threshold
            adopt = adopt_mode(adapted.card, classifier, net, sample_x, sample_y)
            write_service(store, "mnist", FilterService(version=adapted.version, gate=adopt, cycle=cycle,
                                                        reason="benchmark"))
            r["to_service_s"] = time.perf_counter() - trigger
            r["adapt_fit_s"], r["adapt_steps"] = adapted.card.metrics["train_wall_s"], adapted.card.metrics["steps"]
            on_x, on_clean = by_mode(classifier, net, x, y, thr), by_mode(classifier, net, clean_x, y, thr)
            modes = {m: (on_x[m], on_clean[m]) for m in ("gated", "always")}
            r["calibrate_s"], r["run_s"] = adapted.card.metrics["calibrate_s"], adapted.card.metrics["run_s"]
            r.update({f"filter_{m}": modes[m][0] for m in modes})
            r.update({f"clean_{m}": modes[m][1] for m in modes})
            r["adopted"], r["filter"], r["filter_clean"] = adopt, modes[adopt][0], modes[adopt][1]
            searcher = net._aligner
            net._aligner = None  # ablation: the same filter without its alignment search
            r["filter_no_search"] = accuracy_behind(classifier, net, x, y, adopt, thr)
            net._aligner = searcher
            if not args.no_retrain:
                labels_prefix = f"labels/{cycle}/"
                store.put_arrays(f"{labels_prefix}batch-0.npz", images=pool[:args.labels], labels=pool_y[:args.labels],
                                 ids=np.array([f"{cycle}-{i}" for i in range(args.labels)]))
                out = retrain(store, "mnist", version, labels_prefix, num_workers=1, epochs=args.retrain_epochs,
                              base_limit=args.retrain_base, test_limit=1000, lineage={"cycle": cycle})
                challenger, _ = ModelRegistry(store, "mnist").load_networks(out.version)
                r["retrain"] = float((predict(challenger, x).predictions == y).mean())
                r["retrain_clean"] = float((predict(challenger, clean_x).predictions == y).mean())
                r["both_old_filter"] = accuracy_behind(challenger, filters.load_filter(adapted.version, classifier=challenger),
                                                       x, y, adopt, thr)
                if args.no_readapt:  # as evaluate does: the same weights, the search scoring with the challenger
                    both_card = adapted.card
                    both_net = filters.load_filter(adapted.version, classifier=challenger)
                else:  # the filter re-adapted, label-free, to the model it now wraps (the challenger)
                    t = time.perf_counter()
                    both_card = train_filter(store, FilterConfig(
                        classifier_version=out.version, warm_start_from=adapted.version,
                        pool_key=f"cycles/{cycle}/pool.npz", epochs=args.adapt_epochs, base_limit=args.adapt_base,
                        seed=seed, val_limit=args.adapt_val, max_seconds=args.adapt_seconds),
                        notes={"cycle": cycle, "purpose": "both"}).card
                    r["readapt_s"] = time.perf_counter() - t
                    both_net = filters.load_filter(both_card.version, classifier=challenger)
                # evaluate keeps the gate of fit-filter's record; a re-adapted filter gets its own
                both_mode = adopt if args.no_readapt else adopt_mode(both_card, challenger, both_net, sample_x, sample_y)
                b_thr = float(both_card.metrics["gate_threshold"])
                r["both"] = accuracy_behind(challenger, both_net, x, y, both_mode, b_thr)
                r["both_clean"] = accuracy_behind(challenger, both_net, clean_x, y, both_mode, b_thr)
                if args.train_filtered:
                    from daic.filters.apply import apply_filter, gate

                    fx = gate(net, pool[:args.labels], apply_filter(net, pool[:args.labels]), adopt, thr)[0]
                    store.put_arrays(f"labels/{cycle}-f/batch-0.npz", images=fx, labels=pool_y[:args.labels],
                                     ids=np.array([f"{cycle}-f-{i}" for i in range(args.labels)]))
                    out_f = retrain(store, "mnist", version, f"labels/{cycle}-f/", num_workers=1,
                                    epochs=args.retrain_epochs, base_limit=args.retrain_base, test_limit=1000,
                                    lineage={"cycle": cycle + "-f"})
                    ch_f, _ = ModelRegistry(store, "mnist").load_networks(out_f.version)
                    f_net = filters.load_filter(adapted.version, classifier=ch_f)
                    r["trained_filtered"] = accuracy_behind(ch_f, f_net, x, y, adopt, thr)
                    r["trained_filtered_clean"] = accuracy_behind(ch_f, f_net, clean_x, y, adopt, thr)
                hx, hy = pool[args.labels:args.labels + args.holdout], pool_y[args.labels:args.labels + args.holdout]
                r.update(choose(r, classifier, net, adopt, thr, challenger, both_net, both_mode, b_thr, hx, hy,
                                sample_x, sample_y, args.clean_tolerance))
                if args.teacher is not None:
                    r.update(with_teacher(store, args, r, cycle, version, labels_prefix, classifier, net,
                                          adapted.version, adopt, thr, pool, pool_y, x, y, clean_x, hx, hy,
                                          sample_x, sample_y))
            rows.append(r)
            console.print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    write_service(store, "mnist", FilterService(version=None, reason="benchmark done"))

    def regain(acc, r):
        drop = r["clean"] - r["before"]
        return (acc - r["before"]) / drop if drop > 0 else float("nan")

    table = Table(title=f"input filter vs retraining (share {args.share}, {args.labels} labels for retraining)")
    for col in ("scenario", "seeds", "clean", "before", "generic filter [mode] (regained)", "adapted filter [mode]",
                "regained", "no search", "retrain", "both (old filter)", "regained (both)", "clean change (filter)",
                "labels f/r", "trigger->service s (fit s)", "chosen [what]", "regained (chosen)", "clean change (chosen)",
                "clean change gated / always"):
        table.add_column(col)
    for scenario in args.scenarios:
        rs = [r for r in rows if r["scenario"] == scenario]
        m = lambda k: float(np.mean([r[k] for r in rs]))  # noqa: E731
        modes = sorted({r["adopted"] for r in rs})
        reg = [regain(r["filter"], r) for r in rs]
        g_modes = sorted({r["generic_mode"] for r in rs})
        both_reg = [regain(r["both"], r) for r in rs] if not args.no_retrain else [float("nan")]
        table.add_row(
            scenario, str(len(rs)), f"{100 * m('clean'):.2f}", f"{100 * m('before'):.2f}",
            f"{100 * m('generic'):.2f} [{','.join(g_modes)}] ({100 * np.mean([regain(r['generic'], r) for r in rs]):.0f}%)",
            f"{100 * m('filter'):.2f} +- {100 * np.std([r['filter'] for r in rs]):.2f} [{','.join(modes)}]",
            f"{100 * np.mean(reg):.0f}% (min {100 * min(reg):.0f}%)", f"{100 * m('filter_no_search'):.2f}",
            "-" if args.no_retrain else f"{100 * m('retrain'):.2f}",
            "-" if args.no_retrain else f"{100 * m('both'):.2f} ({100 * m('both_old_filter'):.2f})",
            "-" if args.no_retrain else f"{100 * np.mean(both_reg):.0f}% (min {100 * min(both_reg):.0f}%)",
            f"{100 * (m('filter_clean') - m('clean')):+.2f} pts (worst {100 * min(r['filter_clean'] - r['clean'] for r in rs):+.2f})",
            f"0/{args.labels}",
            f"{m('to_service_s'):.1f} (max {max(r['to_service_s'] for r in rs):.1f}; fit {m('adapt_fit_s'):.0f})",
            *(["-", "-", "-"] if args.no_retrain else [
                f"{100 * m('chosen_acc'):.2f} [{','.join(r['chosen'] for r in rs)}]",
                f"{100 * np.mean([regain(r['chosen_acc'], r) for r in rs]):.0f}% "
                f"(min {100 * min(regain(r['chosen_acc'], r) for r in rs):.0f}%)",
                f"{100 * (m('chosen_clean') - m('clean')):+.2f} pts"]),
            f"{100 * (m('clean_gated') - m('clean')):+.2f} / {100 * (m('clean_always') - m('clean')):+.2f}")
    console.print(table)
    if args.train_filtered and not args.no_retrain:
        for scenario in args.scenarios:
            rs = [r for r in rows if r["scenario"] == scenario]
            console.print(f"{scenario}: challenger trained on filtered inputs, behind the filter: "
                          f"{100 * np.mean([r['trained_filtered'] for r in rs]):.2f} (regained "
                          f"{100 * np.mean([regain(r['trained_filtered'], r) for r in rs]):.0f}%, clean "
                          f"{100 * np.mean([r['trained_filtered_clean'] - r['clean'] for r in rs]):+.2f} pts) vs "
                          f"challenger+filter {100 * np.mean([r['both'] for r in rs]):.2f}, challenger "
                          f"{100 * np.mean([r['retrain'] for r in rs]):.2f}, chosen {100 * np.mean([r['chosen_acc'] for r in rs]):.2f}")
    if args.teacher is not None and not args.no_retrain:
        t_table = Table(title=f"retraining with the filter-wrapped champion as teacher (pseudo-labels at confidence "
                              f">= {args.teacher} on the pool's unlabelled rest) against without, same cycles")
        for col in ("scenario", "seeds", "pseudo-labels (accuracy)", "retrain: without / with teacher",
                    "challenger+filter: without / with", "chosen: without / with [what, with]",
                    "regained (chosen): without / with", "clean change (chosen): without / with"):
            t_table.add_column(col)
        for scenario in args.scenarios:
            rs = [r for r in rows if r["scenario"] == scenario]
            m = lambda k: float(np.mean([r[k] for r in rs]))  # noqa: E731
            t_table.add_row(
                scenario, str(len(rs)), f"{m('teacher_pseudo'):.0f} ({100 * m('teacher_pseudo_acc'):.1f}%)",
                f"{100 * m('retrain'):.2f} / {100 * m('retrain_t'):.2f}", f"{100 * m('both'):.2f} / {100 * m('both_t'):.2f}",
                f"{100 * m('chosen_acc'):.2f} / {100 * m('chosen_t_acc'):.2f} [{','.join(r['chosen_t'] for r in rs)}]",
                f"{100 * np.mean([regain(r['chosen_acc'], r) for r in rs]):.0f}% / "
                f"{100 * np.mean([regain(r['chosen_t_acc'], r) for r in rs]):.0f}% "
                f"(min {100 * min(regain(r['chosen_t_acc'], r) for r in rs):.0f}%)",
                f"{100 * (m('chosen_clean') - m('clean')):+.2f} / {100 * (m('chosen_t_clean') - m('clean')):+.2f} pts")
        console.print(t_table)
    lat = latency(net, thr, 300 if args.quick else 2000)  # the last adapted filter, alignment search included
    console.print(f"latency added per request by the filter transformer's work (1 image, 1 torch thread): "
                  f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms (its whole work: p50 {lat['filter_p50']:.2f}, "
                  f"p99 {lat['filter_p99']:.2f} ms); goal p99 <= {GOALS['p99_ms']} ms; load average "
                  f"{os.getloadavg()[0]:.1f} during it")
    if args.stack:
        s = stack_latency(store, 120 if args.quick else 1000)
        console.print(f"end to end through the local stack (1 image per request): model alone p50 {s['model_p50']:.2f} / "
                      f"p99 {s['model_p99']:.2f} ms; filter in front p50 {s['with_filter_p50']:.2f} / p99 "
                      f"{s['with_filter_p99']:.2f} ms; added p50 {s['p50']:.2f}, p99 {s['p99']:.2f} ms")
    console.print(f"load average {os.getloadavg()}; wall {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
