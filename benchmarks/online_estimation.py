"""Benchmark: label-free (online) accuracy estimation under shift, issue 4.

For every operational scenario of ``daic.data.scenarios`` (clean; each of the 20 corruptions at
severities 1-5; 30 % partial shifts; four mixtures at 100 % and 50 %; three label shifts), one
window of 2,000 test-split inputs is estimated by:

* ours, "held-out": an ``OnlineAssessor`` fitted on the val oracle reference and a shifted
  reference *without the corruption types the scenario contains* (outer 5-fold split of the 20
  types; each mixture gets its own fit). This is the honest figure for shifts nobody simulated.
* ours, "seen": the assessor as deployed, fitted with all 20 types (val images, other noise
  seeds; the test images and their corruption noise are never used to fit anything).
* ATC (Garg et al. 2022, negative entropy), DoC (Guillory et al. 2021), average confidence.

Then: trigger recall and false triggers of ``daic.oracles.trigger.decide``, and the error left
after recalibrating on the first 200 labelled inputs of each dropped stream.

Models: the registry's ``SmallCNN``/``ShadowNet`` trained here with plain PyTorch on the 55k
train split (cached in .daic/bench-cache/online/); references are built by the registry's own
``daic.models.reference.build_references``.

    .venv/bin/python benchmarks/online_estimation.py
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CACHE = Path(".daic/bench-cache/online")
EPOCHS = 3


# --- models -----------------------------------------------------------------------------------

def _train(arch: str, images: np.ndarray, labels: np.ndarray, epochs: int, seed: int):
    """Plain PyTorch training on the train split only (Adam with a one-cycle schedule, batch
    128, no augmentation: like the registry's trainer, without Ray)."""
    import torch
    from torch.nn import functional as F
    from tqdm import tqdm

    from daic.models.networks import build

    torch.manual_seed(seed)
    model = build(arch)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.from_numpy(np.ascontiguousarray(images))
    y = torch.from_numpy(np.ascontiguousarray(labels))
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * ((len(x) + 127) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    model.train()
    with tqdm(total=steps, desc=f"train {arch}", leave=False) as bar:
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), 128):
                idx = perm[i:i + 128]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
    model.eval()
    return model


def load_or_train(arch: str, epochs: int = EPOCHS, seed: int = 0, cache: Path = CACHE):
    """A trained network from the cache, trained on the 55k train split if absent."""
    import torch

    from daic.data.mnist import load_split
    from daic.models.networks import build

    model = build(arch)
    # The cache key includes the parameter shapes, so a changed architecture retrains.
    shapes = ";".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    arch_key = hashlib.sha256(shapes.encode()).hexdigest()[:8]
    path = cache / f"{arch}-{arch_key}-e{epochs}-s{seed}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        model.eval()
        return model, path
    train = load_split("train")
    t0 = time.time()
    model = _train(arch, train.images, train.labels, epochs, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    print(f"trained {arch} in {time.time() - t0:.0f}s -> {path}")
    return model, path


def forward(model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probs, embeddings) through the same inference code the registry uses."""
    from daic.models.inference import predict

    out = predict(model, images)
    return out.probs, out.embeddings


@dataclass
class Outputs:
    """What the sidecar would see for a set of inputs, plus the truth."""

    probs: np.ndarray
    embeddings: np.ndarray
    shadow_probs: np.ndarray
    labels: np.ndarray

    @property
    def correct(self) -> np.ndarray:
        return self.probs.argmax(1) == self.labels

    def subset(self, idx) -> "Outputs":
        return Outputs(self.probs[idx], self.embeddings[idx], self.shadow_probs[idx], self.labels[idx])


class Models:
    def __init__(self, cache: Path = CACHE):
        self.model, p1 = load_or_train("small_cnn", cache=cache)
        self.shadow, p2 = load_or_train("shadow_net", cache=cache)
        self.key = hashlib.sha256(p1.read_bytes() + p2.read_bytes()).hexdigest()[:12]

    def outputs(self, images: np.ndarray, labels: np.ndarray) -> Outputs:
        probs, emb = forward(self.model, images)
        shadow, _ = forward(self.shadow, images)
        return Outputs(probs, emb, shadow, np.asarray(labels, dtype=np.int64))


def cached_outputs(models: Models, name: str, make, cache: Path = CACHE) -> tuple[Outputs, dict]:
    """Outputs for the inputs ``make()`` returns ((images, labels, meta)), cached by name."""
    path = cache / f"outputs-{models.key}" / f"{name}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        return Outputs(z["probs"], z["embeddings"], z["shadow_probs"], z["labels"]), meta
    images, labels, meta = make()
    out = models.outputs(images, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, probs=out.probs, embeddings=out.embeddings, shadow_probs=out.shadow_probs,
             labels=out.labels, meta=json.dumps(meta))
    tmp.replace(path)
    return out, meta


# --- data: references (the registry's builder), operational scenarios of the test split ------

WINDOW = 2000  # inputs per operational scenario, estimated as one window


def references(models: Models, cache: Path = CACHE):
    """The oracle reference and the shifted reference, built by the registry's own code
    (``daic.models.reference.build_references``, val split only), cached per model pair."""
    from daic.models.reference import ReferenceConfig, build_references
    from daic.oracles.pipeline import ShiftedReference
    from daic.oracles.reference import OracleReference

    config = ReferenceConfig()
    path = cache / f"outputs-{models.key}" / f"references-{config.shift_per_condition}-{config.seed}.npz"
    if path.exists():
        z = dict(np.load(path, allow_pickle=False))
        ref = OracleReference.from_arrays({k[4:]: v for k, v in z.items() if k.startswith("ref_")})
        shifted = ShiftedReference.from_arrays({k[4:]: v for k, v in z.items() if k.startswith("sft_")})
        return ref, shifted
    t0 = time.time()
    ref, shifted = build_references(models.model, models.shadow, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **{f"ref_{k}": v for k, v in ref.to_arrays().items()},
             **{f"sft_{k}": v for k, v in shifted.to_arrays().items()})
    tmp.replace(path)
    print(f"built references ({len(ref)} val rows, {len(shifted.reference)} shifted rows) in {time.time() - t0:.0f}s")
    return ref, shifted


@dataclass(frozen=True)
class ScenarioCase:
    """One operational scenario of daic.data.scenarios, evaluated as one window of WINDOW inputs."""

    name: str
    group: str            # "clean", "corruption", "partial", "mixture", "label-shift"
    scenario: str         # daic.data.scenarios name
    overrides: tuple      # (key, value) pairs for build_scenario
    corruptions: tuple    # corruption types present (held out when fitting for this case)


MIXTURES = (
    (("translate", 2), ("contrast", 3), ("gaussian_noise", 4), ("rotate", 3)),
    (("fog", 2), ("motion_blur", 3), ("stripe", 2)),
    (("elastic", 4), ("impulse_noise", 3), ("pixelate", 4)),
    (("brightness", 5), ("shear", 3), ("dotted_line", 3), ("zigzag", 2)),
)
LABEL_SHIFTS = (
    (0.25, 0.25, 0.2, 0.1, 0.05, 0.05, 0.04, 0.03, 0.02, 0.01),
    (0.01, 0.02, 0.03, 0.04, 0.05, 0.05, 0.1, 0.2, 0.25, 0.25),
    (0.0, 0.0, 0.1, 0.0, 0.2, 0.0, 0.0, 0.3, 0.0, 0.4),
)


def scenario_cases(corruptions) -> list[ScenarioCase]:
    from daic.data.corruptions import SEVERITIES

    steps = (("batch_size", 200), ("n_steps", WINDOW // 200), ("drift_start", 0))
    cases = [ScenarioCase("stationary", "clean", "stationary", steps, ())]
    for name in corruptions:
        for sev in SEVERITIES:
            cases.append(ScenarioCase(f"{name}/{sev}", "corruption", "sudden",
                                      steps + (("corruption", name), ("severity", sev)), (name,)))
    for name, sev in (("translate", 3), ("contrast", 4), ("rotate", 4), ("fog", 3)):
        cases.append(ScenarioCase(f"{name}/{sev} 30%", "partial", "sudden",
                                  steps + (("corruption", name), ("severity", sev), ("share", 0.3)), (name,)))
    for mix in MIXTURES:
        for share in (1.0, 0.5):
            label = "+".join(f"{c}{s}" for c, s in mix)
            cases.append(ScenarioCase(f"mix {label} {int(share * 100)}%", "mixture", "mixture",
                                      steps + (("mixture", mix), ("share", share)), tuple(c for c, _ in mix)))
    for i, p in enumerate(LABEL_SHIFTS):
        cases.append(ScenarioCase(f"label-shift {i + 1}", "label-shift", "label-shift",
                                  steps + (("class_proportions", p),), ()))
    return cases


def scenario_outputs(models: Models, case: ScenarioCase, seed: int) -> Outputs:
    from daic.data.scenarios import build_scenario, materialise

    def make():
        stream = materialise(build_scenario(case.scenario, seed=seed, **dict(case.overrides)))
        return stream.images, stream.labels, {}

    safe = case.name.replace("/", "_").replace(" ", "_").replace("%", "pct").replace("+", "_")
    return cached_outputs(models, f"scenario-{safe}-s{seed}", make)[0]


# --- evaluation ---------------------------------------------------------------------------------

OUTER_FOLDS = 5
DROP_TRIGGER = 0.05   # a true drop of at least this must trigger
DROP_QUIET = 0.01     # a true drop of at most this must not


def window_estimate(assessor, out: Outputs):
    scores = assessor.score(out.probs, out.embeddings, out.shadow_probs)
    est = assessor.new_estimator(max_count=len(out.labels))
    est.update(scores)
    return est.estimate(), scores


def fmt_row(cells, widths):
    return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def print_table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    print(fmt_row(header, widths))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(fmt_row(r, widths))


def main(argv=None) -> None:
    import argparse

    import torch
    from tqdm import tqdm

    from daic.data.corruptions import CORRUPTIONS
    from daic.oracles.baselines import ATCOracle, DoCOracle
    from daic.oracles.batch import OracleBatch
    from daic.oracles.pipeline import OnlineAssessor
    from daic.oracles.recalibration import RecalibrationCovariates, fit_recalibration
    from daic.oracles.trigger import TriggerPolicy, decide

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--labels", type=int, default=200, help="labels per stream for recalibration")
    parser.add_argument("--trigger-drop", type=float, default=0.03,
                        help="policy: fire when the estimate is this far below the reference accuracy")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.time()

    models = Models()
    ref, shifted = references(models)
    ref_acc = ref.accuracy
    cases = scenario_cases(CORRUPTIONS)
    outs = [scenario_outputs(models, c, seed=1000 + i) for i, c in enumerate(tqdm(cases, desc="scenarios"))]
    t_data = time.time()

    # Baselines fitted on the whole val reference, as published.
    atc, doc = ATCOracle("entropy").fit(ref), DoCOracle().fit(ref)
    # "seen": the assessor as deployed, fitted with every corruption type in the shifted reference.
    # "held-out": for each scenario, an assessor fitted without the corruption types it contains
    # (5 folds of 4 types; mixtures get their own fit), so no shift type is estimated by a model
    # that saw it in the synthetic val shifts.
    fold_of = {name: i % OUTER_FOLDS for i, name in enumerate(CORRUPTIONS)}
    excluded_sets = {frozenset()}
    for c in cases:
        if len(c.corruptions) == 1:
            excluded_sets.add(frozenset(n for n in CORRUPTIONS if fold_of[n] == fold_of[c.corruptions[0]]))
        elif c.corruptions:
            excluded_sets.add(frozenset(c.corruptions))
    assessors = {}
    for ex in tqdm(sorted(excluded_sets, key=sorted), desc="fit assessors"):
        assessors[ex] = OnlineAssessor().fit(ref, shifted.without_types(ex) if ex else shifted)
    seen = assessors[frozenset()]

    def held_out_key(c):
        if not c.corruptions:
            return frozenset()
        if len(c.corruptions) == 1:
            return frozenset(n for n in CORRUPTIONS if fold_of[n] == fold_of[c.corruptions[0]])
        return frozenset(c.corruptions)

    t_fit = time.time()
    rows, recal_rows = [], []
    policy = TriggerPolicy(threshold=args.trigger_drop, mode="drop", reference_accuracy=ref_acc, min_evidence=200)
    for c, o in zip(tqdm(cases, desc="estimate"), outs):
        true = float(o.correct.mean())
        held = assessors[held_out_key(c)]
        e_held, s_held = window_estimate(held, o)
        e_seen, _ = window_estimate(seen, o)
        b = OracleBatch(o.probs)
        row = dict(name=c.name, group=c.group, true=true, held=e_held.accuracy, trusted=e_held.trusted,
                   seen=e_seen.accuracy, seen_trusted=e_seen.trusted, atc=atc.estimate(b), doc=doc.estimate(b),
                   conf=float(o.probs.max(1).mean()), drift=e_held.drift_score, alarm=e_held.drift_alarm,
                   lower=e_held.lower, upper=e_held.upper,
                   trigger=decide(policy, e_held).assess, trigger_seen=decide(policy, e_seen).assess)
        rows.append(row)
        # Offline corrects online: the first `labels` inputs of a dropped stream are labelled;
        # the rest of the stream is estimated with the correction and compared with its truth.
        if ref_acc - true >= DROP_TRIGGER:
            m = args.labels
            lab, rest = np.arange(m), np.arange(m, len(o.labels))
            truth_rest = float(o.correct[rest].mean())
            before = held.new_estimator(max_count=len(rest))
            before.update(s_held.subset(rest))
            rr = dict(name=c.name, true=truth_rest, before=before.estimate().accuracy, se=float("nan"))
            sl = s_held.subset(lab)
            covariates = RecalibrationCovariates.from_scores(sl)
            for method in ("intercept", "platt", "rogan_gladen", "covariate"):
                try:
                    rec = fit_recalibration(s_held.p_correct[lab], o.correct[lab], method,
                                            **({"covariates": covariates, "n_classes": o.probs.shape[1]}
                                               if method == "covariate" else {}))
                except ValueError:
                    rr[method] = float("nan")
                    continue
                if method == "intercept":
                    rr["se"] = rec.std_error
                est = held.new_estimator(max_count=len(rest))
                est.recalibrate(rec)
                est.update(s_held.subset(rest))
                rr[method] = est.estimate().accuracy
                if method == "covariate":
                    # The same correction weighed with the label-free estimate by inverse variance.
                    est = held.new_estimator(max_count=len(rest), fuse_label_free=True)
                    est.recalibrate(rec)
                    est.update(s_held.subset(rest))
                    rr["covariate_fused"] = est.estimate().accuracy
                    rr["covariate_fused_stream"] = (len(rest) * rr["covariate_fused"]
                                                    + o.correct[lab].sum()) / len(o.labels)
            # Refit the combiner on the reference plus the labelled inputs; estimate the rest.
            refit = held.refit_with_labels(o.probs[lab], o.embeddings[lab], o.shadow_probs[lab], o.labels[lab])
            rest_out = o.subset(rest)
            est = refit.new_estimator(max_count=len(rest))
            est.update(refit.score(rest_out.probs, rest_out.embeddings, rest_out.shadow_probs))
            rr["refit"] = est.estimate().accuracy
            # The whole stream (labelled inputs counted by their known outcome) vs its truth.
            rr["refit_stream"] = (len(rest) * rr["refit"] + o.correct[lab].sum()) / len(o.labels)
            rr["true_stream"] = true
            recal_rows.append(rr)
    t_eval = time.time()
    report(rows, recal_rows, ref_acc, seen, args, policy, dict(data=t_data - t_start, fit=t_fit - t_data,
                                                        evaluate=t_eval - t_fit, total=t_eval - t_start))


def _pts(x):
    return f"{100 * x:+.1f}"


def report(rows, recal_rows, ref_acc, seen, args, policy, timings) -> None:
    print(f"\nreference (val) accuracy {100 * ref_acc:.2f}%; seen assessor: model error "
          f"{100 * seen.model_error:.1f} pts, trust region drift <= {seen.max_drift_score:.3f}")
    print("\nPer scenario (accuracy %, errors in points; 'held-out' = fitted without the scenario's "
          "corruption types; * = flagged untrusted; T = trigger fired)\n")
    header = ["scenario", "true", "held-out", "err", "seen", "err", "ATC", "err", "DoC", "err", "conf", "err",
              "drift", "T"]
    table = []
    for r in rows:
        table.append([r["name"], f"{100 * r['true']:.1f}",
                      f"{100 * r['held']:.1f}{'' if r['trusted'] else '*'}", _pts(r["held"] - r["true"]),
                      f"{100 * r['seen']:.1f}{'' if r['seen_trusted'] else '*'}", _pts(r["seen"] - r["true"]),
                      f"{100 * r['atc']:.1f}", _pts(r["atc"] - r["true"]), f"{100 * r['doc']:.1f}",
                      _pts(r["doc"] - r["true"]), f"{100 * r['conf']:.1f}", _pts(r["conf"] - r["true"]),
                      f"{r['drift']:.3f}", "T" if r["trigger"] else ""])
    print_table(header, table)

    def err(key, sel=None):
        e = np.array([abs(r[key] - r["true"]) for r in rows if sel is None or sel(r)]) * 100
        return (f"{e.mean():.2f}", f"{e.max():.1f}", str(len(e))) if len(e) else ("-", "-", "0")

    print("\nAbsolute error (points) over scenarios\n")
    summary = [
        ["ours, held-out types, all scenarios", *err("held")],
        ["ours, held-out types, trusted only", *err("held", lambda r: r["trusted"])],
        ["ours, held-out types, untrusted only", *err("held", lambda r: not r["trusted"])],
        ["ours, seen types, all scenarios", *err("seen")],
        ["ours, seen types, trusted only", *err("seen", lambda r: r["seen_trusted"])],
        ["ATC (negative entropy)", *err("atc")],
        ["DoC", *err("doc")],
        ["average confidence", *err("conf")],
    ]
    print_table(["method", "mean", "worst", "n"], summary)
    worst = max(rows, key=lambda r: abs(r["held"] - r["true"]))
    big_trusted = [r for r in rows if r["trusted"] and abs(r["held"] - r["true"]) > 0.10]
    print(f"\nworst held-out case: {worst['name']} (error {_pts(worst['held'] - worst['true'])}, "
          f"{'trusted' if worst['trusted'] else 'flagged untrusted'}); trusted scenarios with error > 10 pts: "
          f"{len(big_trusted)} {[r['name'] for r in big_trusted]}")
    covered = np.mean([r["lower"] <= r["true"] <= r["upper"] for r in rows])
    covered_t = [r["lower"] <= r["true"] <= r["upper"] for r in rows if r["trusted"]]
    print(f"95% band covers the truth: {100 * covered:.0f}% of scenarios, "
          f"{100 * np.mean(covered_t):.0f}% of trusted ones")

    for label, key in (("held-out", "trigger"), ("seen", "trigger_seen")):
        must = [r for r in rows if ref_acc - r["true"] >= DROP_TRIGGER]
        quiet = [r for r in rows if ref_acc - r["true"] <= DROP_QUIET]
        recall = np.mean([r[key] for r in must])
        false = np.mean([r[key] for r in quiet])
        missed = [r["name"] for r in must if not r[key]]
        fired = [r["name"] for r in quiet if r[key]]
        margin = getattr(policy, "untrusted_margin_sd", None)
        untrusted = "untrusted with a drift alarm" + (
            "" if margin is None else f" and a drop within {margin:g} error SD of the estimate")
        print(f"\ntrigger ({label}; policy: estimate < reference - {100 * args.trigger_drop:.0f} pts, or {untrusted}): "
              f"recall {100 * recall:.0f}% of {len(must)} scenarios with a drop >= "
              f"{100 * DROP_TRIGGER:.0f} pts (missed: {missed}); false triggers {100 * false:.1f}% of {len(quiet)} "
              f"with a drop <= {100 * DROP_QUIET:.0f} pt (fired: {fired})")

    if recal_rows:
        print(f"\nRecalibration with {args.labels} labels from each stream whose drop is >= "
              f"{100 * DROP_TRIGGER:.0f} pts ({len(recal_rows)} streams; error on the rest of the stream, points)\n")
        out = []
        for key, label, truth in (
                ("before", "no recalibration (held-out)", "true"), ("intercept", "intercept", "true"),
                ("platt", "platt", "true"), ("rogan_gladen", "rogan-gladen", "true"),
                ("covariate", "covariate (MAP logistic on window columns)", "true"),
                ("covariate_fused", "covariate, fused with the label-free estimate", "true"),
                ("refit", "refit combiner (unlabelled rest only)", "true"),
                ("refit_stream", "refit combiner, whole stream incl. the labelled", "true_stream"),
                ("covariate_fused_stream", "covariate fused, whole stream incl. the labelled", "true_stream")):
            e = np.array([abs(r[key] - r[truth]) for r in recal_rows]) * 100
            ok = e[np.isfinite(e)]
            out.append([label, f"{ok.mean():.2f}", f"{ok.max():.1f}", f"{100 * np.mean(ok <= 2):.0f}%",
                        str(int((~np.isfinite(e)).sum()))])
        print_table(["method", "mean", "worst", "<= 2 pts", "not fitted"], out)
        print(f"(rows without 'whole stream': error on the {WINDOW - args.labels} unlabelled inputs; 'whole "
              f"stream' rows: error on all {WINDOW}, the {args.labels} labelled ones counted by their known outcome)")
        worst3 = sorted(recal_rows, key=lambda r: -abs(r["refit"] - r["true"]))[:3]
        print("largest refit errors: " + ", ".join(
            f"{r['name']} ({_pts(r['refit'] - r['true'])}, label SE {100 * r['se']:.1f})" for r in worst3))
        se = np.array([r["se"] for r in recal_rows]) * 100
        print(f"\nthe labels' own noise (intercept std_error, sqrt(mean((y - p')^2) / {args.labels})): mean "
              f"{np.nanmean(se):.2f} pts, range {np.nanmin(se):.2f}-{np.nanmax(se):.2f}: a mean absolute error "
              f"of about 0.8 x that is the floor for {args.labels} labels")
    print("\ntime: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))


if __name__ == "__main__":
    main()
