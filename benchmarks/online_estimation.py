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

Issue 17 (``sequential_section``): the trigger delay of the window rule and of the sequential
(CUSUM) rule on change-point streams (1,000 clean test inputs, then a scenario whose accuracy
is >= 10 points lower; batches of 100; held-out assessors), the clean-traffic false-alarm rate
of the change detector (1,000,000 inputs resampled from the test split and from the val split,
and both splits in their own order), the drift alarm's false-alarm rate on clean windows of
50-5,000 inputs and its detection rate on shifted scenarios, the trusted share and the band's
coverage.

Issue 17, items 3-4: the assessors use the energy signal (the registry stores the champion's
linear head; ``daic.oracles.combiner.neg_energy``) by default, and the band model
(``daic.oracles.band_model``, normalised conformal on the window's features: band and trust),
which the trust/band table compares with the drift-score rule; ``--band-method cqr|none`` fits
them with the quantile band model or without one; the report also prints the held-out error of
the window estimate averaged over 1, 2, 4, ... of the cross-fit replicates (its dependence on
their chance choices; ``--replicates N`` fits N of them) and the scenarios the band misses;
the model's self-agreement under test-time transforms is a signal by default, as the sidecar
serves it (``daic.oracles.self_agreement``, the served views; computed for every input and
cached; ``--no-self-agreement`` leaves it out, ``--views`` chooses others); ``--paired-types a,b``
runs only a paired comparison without/with self-agreement on one held-out fold's scenarios. The
last section prints the scoring side's cost per input.

Models: the registry's ``SmallCNN``/``ShadowNet`` trained here with plain PyTorch on the 55k
train split (cached in .daic/bench-cache/online/); references are built by the registry's own
``daic.models.reference.build_references``.

    .venv/bin/python benchmarks/online_estimation.py
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

CACHE = Path(".daic/bench-cache/online")
EPOCHS = 3


# --- models -----------------------------------------------------------------------------------

def _train(arch: str, images: np.ndarray, labels: np.ndarray, epochs: int, seed: int, augment_share: float = 0.0):
    """Plain PyTorch training on the train split only (Adam with a one-cycle schedule, batch
    128: like the registry's trainer, without Ray). ``augment_share`` > 0: that share of every
    batch goes through a random chain of the generic augmentation family
    (``daic.training.augment.chain``, AugMix's operations; Hendrycks et al. 2020), as the
    registry's trainer does for a robust shadow."""
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
                xb = x[idx]
                if augment_share > 0:
                    from daic.training.augment import chain

                    xb = xb.unsqueeze(1).float()
                    pick = torch.rand(len(idx), generator=gen) < augment_share
                    if pick.any():
                        xb[pick] = chain(xb[pick], gen)
                loss = F.cross_entropy(model(xb), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
    model.eval()
    return model


def load_or_train(arch: str, epochs: int = EPOCHS, seed: int = 0, cache: Path = CACHE, augment_share: float = 0.0):
    """A trained network from the cache, trained on the 55k train split if absent (with the
    augmentation family on ``augment_share`` of every batch when > 0)."""
    import torch

    from daic.data.mnist import load_split
    from daic.models.networks import build

    model = build(arch)
    # The cache key includes the parameter shapes, so a changed architecture retrains.
    shapes = ";".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    arch_key = hashlib.sha256(shapes.encode()).hexdigest()[:8]
    aug = f"-aug{augment_share:g}" if augment_share > 0 else ""
    path = cache / f"{arch}-{arch_key}-e{epochs}-s{seed}{aug}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        model.eval()
        return model, path
    train = load_split("train")
    t0 = time.time()
    model = _train(arch, train.images, train.labels, epochs, seed, augment_share)
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
    self_agreement: np.ndarray | None = None  # daic.oracles.self_agreement, where computed

    @property
    def correct(self) -> np.ndarray:
        return self.probs.argmax(1) == self.labels

    def subset(self, idx) -> "Outputs":
        return Outputs(self.probs[idx], self.embeddings[idx], self.shadow_probs[idx], self.labels[idx],
                       None if self.self_agreement is None else self.self_agreement[idx])

    def scores(self, assessor):
        """The assessor's per-input scores, as the sidecar computes them."""
        return assessor.score(self.probs, self.embeddings, self.shadow_probs, self.self_agreement)


SHADOW_AUGMENT = 0.0  # main() sets it from --shadow-augment


MODEL_SEED = 0  # main() sets it from --model-seed


class Models:
    def __init__(self, cache: Path = CACHE):
        self.model, p1 = load_or_train("small_cnn", seed=MODEL_SEED, cache=cache)
        self.shadow, p2 = load_or_train("shadow_net", seed=MODEL_SEED, cache=cache, augment_share=SHADOW_AUGMENT)
        self.key = hashlib.sha256(p1.read_bytes() + p2.read_bytes()).hexdigest()[:12]

    def outputs(self, images: np.ndarray, labels: np.ndarray) -> Outputs:
        probs, emb = forward(self.model, images)
        shadow, _ = forward(self.shadow, images)
        return Outputs(probs, emb, shadow, np.asarray(labels, dtype=np.int64))


SELF_AGREEMENT = True  # main() sets it from --self-agreement / --no-self-agreement
VIEWS: tuple = ()  # main() sets it from --views (daic.oracles.self_agreement.SERVED_VIEWS by default)
FIT_SHIFTS: tuple = ()  # main() sets it from --fit-shifts
#: the fit-only family (daic.data.fit_shifts) of the same kind as a named corruption, for
#: --strict-families; intensity changes (brightness, contrast) have none among the defaults
FAMILY_OF = {
    **dict.fromkeys(("gaussian_noise", "shot_noise", "impulse_noise"), "randnoise"),
    **dict.fromkeys(("gaussian_blur", "glass_blur", "motion_blur", "pixelate", "edges"), "randconv"),
    **dict.fromkeys(("shear", "scale", "rotate", "translate", "elastic"), "randwarp"),
    **dict.fromkeys(("spatter", "stripe", "dotted_line", "zigzag", "fog"), "randclutter"),
}


def cached_self_agreement(models: Models, name: str, out: Outputs, images_of, cache: Path = CACHE) -> Outputs:
    """``out`` with the model's self-agreement under test-time transforms
    (``daic.oracles.self_agreement``), computed from ``images_of()`` once and cached by name."""
    from daic.oracles.self_agreement import self_agreement, view_probs

    views_key = hashlib.sha256(repr(VIEWS).encode()).hexdigest()[:8]
    path = cache / f"outputs-{models.key}" / f"sa-{views_key}-{name}.npz"
    if path.exists():
        sa = np.load(path)["self_agreement"]
    else:
        sa = self_agreement(out.probs, view_probs(models.model, images_of(), VIEWS))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, self_agreement=sa)
        tmp.replace(path)
    return Outputs(out.probs, out.embeddings, out.shadow_probs, out.labels, sa)


def cached_outputs(models: Models, name: str, make, cache: Path = CACHE) -> tuple[Outputs, dict]:
    """Outputs for the inputs ``make()`` returns ((images, labels, meta)), cached by name (with
    their self-agreement when SELF_AGREEMENT)."""
    path = cache / f"outputs-{models.key}" / f"{name}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        out = Outputs(z["probs"], z["embeddings"], z["shadow_probs"], z["labels"])
        if SELF_AGREEMENT:
            out = cached_self_agreement(models, name, out, lambda: make()[0], cache)
        return out, meta
    images, labels, meta = make()
    out = models.outputs(images, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, probs=out.probs, embeddings=out.embeddings, shadow_probs=out.shadow_probs,
             labels=out.labels, meta=json.dumps(meta))
    tmp.replace(path)
    if SELF_AGREEMENT:
        out = cached_self_agreement(models, name, out, lambda: images, cache)
    return out, meta


# --- data: references (the registry's builder), operational scenarios of the test split ------

WINDOW = 2000  # inputs per operational scenario, estimated as one window


def references(models: Models, cache: Path = CACHE):
    """The oracle reference and the shifted reference, built by the registry's own code
    (``daic.models.reference.build_references``, val split only), cached per model pair."""
    from daic.models.reference import ReferenceConfig, build_references
    from daic.oracles.pipeline import ShiftedReference
    from daic.oracles.reference import OracleReference

    config = ReferenceConfig(self_agreement=SELF_AGREEMENT, fit_shifts=FIT_SHIFTS,
                             self_agreement_views=VIEWS if SELF_AGREEMENT else None)
    if SELF_AGREEMENT:
        sa = "-sa-" + hashlib.sha256(repr(VIEWS).encode()).hexdigest()[:8]
    else:
        sa = ""
    fs = ("-" + "-".join(config.fit_shifts)) if config.fit_shifts else ""
    path = cache / f"outputs-{models.key}" / f"references-{config.shift_per_condition}-{config.seed}{sa}{fs}.npz"
    if path.exists():
        z = dict(np.load(path, allow_pickle=False))
        ref = OracleReference.from_arrays({k[4:]: v for k, v in z.items() if k.startswith("ref_")})
        shifted = ShiftedReference.from_arrays({k[4:]: v for k, v in z.items() if k.startswith("sft_")})
        if shifted.head_weight is None and config.energy_head:
            # Cached before the registry stored the head: attach it as build_references does.
            from daic.models.reference import linear_head

            head = linear_head(models.model, ref.embeddings.shape[1])
            if head is not None:
                shifted = shifted.with_head(*head)
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
    scores = out.scores(assessor)
    est = assessor.new_estimator(max_count=len(out.labels))
    est.update(scores)
    return est.estimate(), scores


def _replicate_estimates(assessor, scores):
    """Each cross-fit replicate's own window estimate (the assessor's window model averages them),
    so the report can show how much the figure depends on the replicates' chance choices."""
    est = assessor.new_estimator(max_count=len(scores))
    est.update(scores)
    _, feats = est._window_model_estimate()
    if feats is None:
        return None
    x = feats[None]
    return [float(np.clip(x[0, 0] + m.predict(x)[0], 0.0, 1.0)) for m in assessor.window_model._models]


def replicate_spread(rows) -> str:
    """Held-out-type MAE of the window model averaged over 1, 2, 4, ... of the assessors'
    replicates (all subsets of that size, or up to 70 of them), against the truth."""
    from itertools import combinations

    reps = [r["held_reps"] for r in rows]
    if any(r is None for r in reps):
        return "replicate spread: not available (no window model)"
    n = min(len(r) for r in reps)
    preds, truth = np.array([r[:n] for r in reps]), np.array([r["true"] for r in rows])
    parts = []
    size = 1
    while size <= n:
        subsets = list(combinations(range(n), size))[:70]
        maes = [100 * np.mean(np.abs(preds[:, list(c)].mean(1) - truth)) for c in subsets]
        parts.append(f"{size}: {np.mean(maes):.2f}" + (f" (range {min(maes):.2f}-{max(maes):.2f} over {len(maes)})"
                                                       if len(maes) > 1 else ""))
        size *= 2
    return ("held-out-type MAE of the window estimate averaged over k of the " + str(n)
            + " cross-fit replicates (chance choices: fold assignment of types, synthetic windows): " + "; ".join(parts))


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
    from daic.oracles.pipeline import AssessorConfig, OnlineAssessor
    from daic.oracles.recalibration import RecalibrationCovariates, fit_recalibration
    from daic.oracles.trigger import TriggerPolicy, decide

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--labels", type=int, default=200, help="labels per stream for recalibration")
    parser.add_argument("--trigger-drop", type=float, default=0.03,
                        help="policy: fire when the estimate is this far below the reference accuracy")
    parser.add_argument("--skip-sequential", action="store_true",
                        help="skip the issue-17 section (trigger delay, clean false alarms, drift alarm)")
    parser.add_argument("--clean-inputs", type=int, default=1_000_000,
                        help="resampled clean inputs per split for the change detector's false-alarm rate")
    parser.add_argument("--self-agreement", action="store_true", default=True,
                        help="fit and score with the model's self-agreement under test-time transforms, as the "
                             "sidecar does (daic.oracles.self_agreement; computed for every reference and scenario "
                             "input, cached): the default")
    parser.add_argument("--no-self-agreement", dest="self_agreement", action="store_false",
                        help="without the self-agreement signal (the assessor of versions registered before it was served)")
    parser.add_argument("--views", default=None,
                        help="the self-agreement's test-time views, 'kind:amount,...' (kinds of "
                             "daic.oracles.self_agreement: shift_x, shift_y, rotate, stretch, noise); default: the "
                             "served ones, SERVED_VIEWS ('stretch:0', the per-image intensity stretch)")
    parser.add_argument("--model-seed", type=int, default=0,
                        help="seed of the model pair's training (another seed: another pair, trained and cached "
                             "beside the first; a figure that holds on two pairs is not one pair's chance)")
    parser.add_argument("--band-method", choices=("default", "scale", "cqr", "none"), default="default",
                        help="the assessors' band model (daic.oracles.band_model): the AssessorConfig default "
                             "(normalised conformal, 'scale'), 'cqr' (conformalized quantile regression) or 'none' "
                             "(drift-score trust rule and error model only); the trust/band table compares it with "
                             "the drift rule")
    parser.add_argument("--replicates", type=int, default=None,
                        help="the assessors' cross-fit replicates (AssessorConfig.replicates); default: the config's")
    parser.add_argument("--paired-types", default=None,
                        help="comma-separated corruption types of one outer fold: only a paired comparison on their "
                             "scenarios (held-out assessors without and with self-agreement; band model and drift rule)")
    parser.add_argument("--shadow-augment", type=float, default=0.0,
                        help="train the shadow with the generic augmentation family (daic.training.augment.chain) on "
                             "this share of every batch (a robust shadow: its agreement with the model is the "
                             "pseudo-oracle); 0: the plain shadow")
    parser.add_argument("--strict-families", action="store_true",
                        help="fit each held-out assessor without the fit-only family of the same kind as its held-out "
                             "types too (FAMILY_OF): the held-out error for a shift of a kind no family spans")
    parser.add_argument("--fit-shifts", default=None,
                        help="comma-separated fit-only shift families (daic.data.fit_shifts) in the shifted reference, "
                             "'all' for every one, 'none' for none; default: ReferenceConfig's")
    args = parser.parse_args(argv)
    global SELF_AGREEMENT, SHADOW_AUGMENT, FIT_SHIFTS, VIEWS, MODEL_SEED
    SELF_AGREEMENT = args.self_agreement
    MODEL_SEED = args.model_seed
    from daic.oracles.self_agreement import SERVED_VIEWS as DEFAULT_VIEWS, parse_views

    try:
        VIEWS = parse_views(args.views) if args.views else DEFAULT_VIEWS
    except ValueError as exc:
        parser.error(f"--views: {exc}")
    if args.fit_shifts is not None:
        from daic.data.fit_shifts import FIT_SHIFTS as ALL_FIT_SHIFTS

        FIT_SHIFTS = {"all": ALL_FIT_SHIFTS, "none": ()}.get(args.fit_shifts) or tuple(args.fit_shifts.split(","))
    else:
        from daic.models.reference import ReferenceConfig

        FIT_SHIFTS = ReferenceConfig().fit_shifts
    SHADOW_AUGMENT = args.shadow_augment
    if args.paired_types:
        torch.set_num_threads(args.threads)
        paired_section(Models(), tuple(args.paired_types.split(",")))
        return
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
    if args.band_method == "default":
        config = AssessorConfig()
    elif args.band_method == "none":
        config = AssessorConfig(band_model=False)
    else:
        config = AssessorConfig(band_model=True, band_method=args.band_method)
    if args.replicates is not None:
        try:
            config = replace(config, replicates=args.replicates)
        except ValueError as exc:
            parser.error(f"--replicates: {exc}")
    for ex in tqdm(sorted(excluded_sets, key=sorted), desc="fit assessors"):
        # --strict-families: a held-out type's fit-only family of the same kind is held out with it
        drop = set(ex) | ({FAMILY_OF.get(t) for t in ex} - {None} if args.strict_families else set())
        assessors[ex] = OnlineAssessor(config).fit(
            ref, shifted.without_types(drop) if drop else shifted)
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
    window_policy = TriggerPolicy(threshold=args.trigger_drop, mode="drop", reference_accuracy=ref_acc,
                                  min_evidence=200, trigger_on_change=False)
    for c, o in zip(tqdm(cases, desc="estimate"), outs):
        true = float(o.correct.mean())
        held = assessors[held_out_key(c)]
        e_held, s_held = window_estimate(held, o)
        e_seen, _ = window_estimate(seen, o)
        # The same window without the band model: trust from the drift score, band from the
        # error model (drift score x estimate), as before issue 17's band model.
        e_drift = held.new_estimator(max_count=len(o.labels))
        e_drift.band_model = None
        e_drift.update(s_held)
        e_drift = e_drift.estimate()
        b = OracleBatch(o.probs)
        held_reps = _replicate_estimates(held, s_held)
        row = dict(held_reps=held_reps, name=c.name, group=c.group, true=true, held=e_held.accuracy, trusted=e_held.trusted,
                   seen=e_seen.accuracy, seen_trusted=e_seen.trusted, atc=atc.estimate(b), doc=doc.estimate(b),
                   conf=float(o.probs.max(1).mean()), drift=e_held.drift_score, alarm=e_held.drift_alarm,
                   lower=e_held.lower, upper=e_held.upper, band_model=held.band_model is not None,
                   trusted_drift=e_drift.trusted, lower_drift=e_drift.lower, upper_drift=e_drift.upper,
                   trigger=decide(policy, e_held).assess, trigger_seen=decide(policy, e_seen).assess,
                   trigger_window=decide(window_policy, e_held).assess,
                   trigger_seen_window=decide(window_policy, e_seen).assess)
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
            lab_out = o.subset(lab)
            refit = held.refit_with_labels(lab_out.probs, lab_out.embeddings, lab_out.shadow_probs, lab_out.labels,
                                           lab_out.self_agreement)
            rest_out = o.subset(rest)
            est = refit.new_estimator(max_count=len(rest))
            est.update(rest_out.scores(refit))
            rr["refit"] = est.estimate().accuracy
            # The whole stream (labelled inputs counted by their known outcome) vs its truth.
            rr["refit_stream"] = (len(rest) * rr["refit"] + o.correct[lab].sum()) / len(o.labels)
            rr["true_stream"] = true
            recal_rows.append(rr)
    t_eval = time.time()
    report(rows, recal_rows, ref_acc, seen, args, policy, dict(data=t_data - t_start, fit=t_fit - t_data,
                                                        evaluate=t_eval - t_fit, total=t_eval - t_start))
    if not args.skip_sequential:
        t0 = time.time()
        clean_test, _ = cached_outputs(models, "clean-test-full", _clean_split("test"))
        clean_val = Outputs(ref.probs, ref.embeddings, ref.shadow_probs, ref.labels,
                            shifted.reference_self_agreement if SELF_AGREEMENT else None)
        sequential_section(cases, outs, rows, assessors, held_out_key, seen, clean_test, clean_val, ref_acc,
                           args.trigger_drop, clean_inputs=args.clean_inputs)
        cost_section(models, seen, clean_test)
        print(f"\ntime (issue 17 section): {time.time() - t0:.0f}s; whole run {time.time() - t_start:.0f}s")


# --- issue 17: sequential trigger, clean false alarms, drift alarm, trust ----------------------

BATCH = 100            # inputs per batch in the change-point streams
PRE_CHANGE = 1000      # clean inputs before the change point
DROP_FAST = 0.10       # a drop at least this large must trigger within FAST_DELAY inputs
FAST_DELAY = 200
SIDECAR_WINDOW = 1000  # the sidecar's default window (daic.sidecar.config)
DRIFT_SIZES = (50, 100, 200, 500, 1000, 2000, 5000)


def _clean_split(split: str):
    def make():
        from daic.data.mnist import load_split

        data = load_split(split)
        return data.images, data.labels, {}
    return make


def _stream_delays(assessor, pre_scores, post_scores, policy):
    """Feed pre-change then post-change scores in batches; for each trigger method, the number
    of post-change inputs seen when it first fires (None: never) and whether it fired before the
    change; also the drift alarm's delay."""
    from dataclasses import replace

    from daic.oracles.trigger import decide

    est = assessor.new_estimator(max_count=SIDECAR_WINDOW)
    methods = {"window": replace(policy, trigger_on_change=False), "sequential": replace(policy, trigger_on_change=True)}
    delay = {m: None for m in methods}
    early = {m: False for m in methods}
    drift_delay = None
    n_pre, n_post = len(pre_scores), len(post_scores)
    for start in range(0, n_pre + n_post, BATCH):
        stop = min(start + BATCH, n_pre + n_post)
        idx = np.arange(start, stop)
        pre_idx, post_idx = idx[idx < n_pre], idx[idx >= n_pre] - n_pre
        if len(pre_idx):
            est.update(pre_scores.subset(pre_idx))
        if len(post_idx):
            est.update(post_scores.subset(post_idx))
        e = est.estimate()
        after = stop - n_pre
        for m, pol in methods.items():
            fired = decide(pol, e, armed=True).assess
            if fired and after <= 0:
                early[m] = True
            if fired and after > 0 and delay[m] is None:
                delay[m] = after
        if after > 0 and drift_delay is None and e.drift_alarm:
            drift_delay = after
        if after > 0 and all(d is not None for d in delay.values()) and drift_delay is not None:
            break
    return delay, early, drift_delay


def _clean_alarm_rate(detector_cusum, errors, n_inputs, rng, order=None):
    """Alarm onsets of a fresh change detector per input over ``n_inputs`` clean inputs resampled
    from ``errors`` (or ``errors`` in their own order, repeated, when ``order`` is 'split')."""
    from daic.oracles.change import CusumDetector

    det = CusumDetector(detector_cusum)
    done = 0
    while done < n_inputs:
        size = min(100_000, n_inputs - done)
        chunk = errors[:size] if order == "split" else rng.choice(errors, size=size)
        for i in range(0, size, BATCH):
            det.update(chunk[i:i + BATCH])
        done += size
    return det.alarms, done


def sequential_section(cases, outs, rows, assessors, held_out_key, seen, clean_test, clean_val, ref_acc,
                       trigger_drop, clean_inputs=1_000_000):
    """Issue 17's figures: trigger delay, clean false alarms, drift alarm, trusted share, coverage."""
    from daic.oracles.trigger import TriggerPolicy

    rng = np.random.default_rng(17)
    policy = TriggerPolicy(threshold=trigger_drop, mode="drop", reference_accuracy=ref_acc, min_evidence=200)
    pre_idx = rng.choice(len(clean_test.labels), size=PRE_CHANGE, replace=False)
    pre_out = clean_test.subset(pre_idx)
    pre_scores = {}
    stream_rows = []
    for c, o, r in zip(cases, outs, rows):
        drop = ref_acc - r["true"]
        if DROP_QUIET < drop < DROP_TRIGGER or c.group == "clean":
            continue
        key = held_out_key(c)
        held = assessors[key]
        if key not in pre_scores:
            pre_scores[key] = pre_out.scores(held)
        post = o.scores(held)
        delay, early, drift_delay = _stream_delays(held, pre_scores[key], post, policy)
        stream_rows.append(dict(name=c.name, drop=drop, delay=delay, early=early, drift_delay=drift_delay))

    print(f"\nTrigger delay: {PRE_CHANGE} clean test inputs, then the scenario's {WINDOW} inputs, in batches of "
          f"{BATCH}; window {SIDECAR_WINDOW}; held-out assessors; policy: drop > {100 * trigger_drop:.0f} pts "
          f"(window rule as above), 'sequential' adds the CUSUM change alarm. Delay = post-change inputs seen when "
          f"the trigger first fires.\n")
    table = []
    for label, lo in ((f"drop >= {100 * DROP_FAST:.0f} pts", DROP_FAST), (f"drop >= {100 * DROP_TRIGGER:.0f} pts", DROP_TRIGGER)):
        sel = [s for s in stream_rows if s["drop"] >= lo]
        for m in ("window", "sequential"):
            d = np.array([s["delay"][m] if s["delay"][m] is not None else np.inf for s in sel], dtype=float)
            fin = d[np.isfinite(d)]
            table.append([label, m, str(len(sel)), f"{np.median(d):.0f}" if len(d) else "-",
                          f"{fin.mean():.0f}" if len(fin) else "-", f"{d.max():.0f}" if len(d) else "-",
                          f"{int((d <= FAST_DELAY).sum())}/{len(d)}", str(int((~np.isfinite(d)).sum())),
                          str(sum(s["early"][m] for s in sel))])
    print_table(["streams", "method", "n", "median delay", "mean delay", "worst", f"<= {FAST_DELAY}", "missed",
                 "fired before change"], table)
    quiet = [s for s in stream_rows if s["drop"] <= DROP_QUIET]
    print(f"false triggers on the streams whose scenario drops <= {100 * DROP_QUIET:.0f} pt (shifted or label-shifted, "
          f"{len(quiet)} streams; fired at any batch after the change): " + "; ".join(
              f"{m} {sum(s['delay'][m] is not None for s in quiet)}/{len(quiet)} "
              f"{[s['name'] for s in quiet if s['delay'][m] is not None]}" for m in ("window", "sequential")))
    fast = [s for s in stream_rows if s["drop"] >= DROP_FAST]
    slow = sorted(fast, key=lambda s: -(s["delay"]["sequential"] or 10**9))[:5]
    print("slowest sequential triggers (drop >= 10 pts): " + ", ".join(
        f"{s['name']} ({s['delay']['sequential']} inputs, drop {100 * s['drop']:.0f})" for s in slow))
    dd = np.array([s["drift_delay"] if s["drift_delay"] is not None else np.inf for s in fast], dtype=float)
    print(f"drift alarm delay on the same streams (drop >= 10 pts): median {np.median(dd):.0f} inputs, "
          f"{int((dd <= FAST_DELAY).sum())}/{len(dd)} within {FAST_DELAY}, never: {int((~np.isfinite(dd)).sum())}")

    # Clean false alarms of the change detector (and of the whole sequential trigger).
    print(f"\nClean-traffic false alarms of the change detector (seen assessor as deployed; CUSUM k = "
          f"{seen.change.k:.4f}, h = {seen.change.h:.3f}, calibrated on the val calibration rows for "
          f"{seen.change.rate:.0e} per input = 1e-5 / safety)\n")
    fa_rows = []
    for split, out in (("test", clean_test), ("val", clean_val)):
        e = 1.0 - out.scores(seen).p_correct
        alarms, n = _clean_alarm_rate(seen.change, e, clean_inputs, rng)
        fa_rows.append([f"{split}, resampled i.i.d.", f"{n:,}", f"{100 * (1 - e.mean()):.2f}", str(alarms),
                        f"{1e5 * alarms / n:.2f}"])
        alarms, n = _clean_alarm_rate(seen.change, e, len(e), rng, order="split")
        fa_rows.append([f"{split}, split order", f"{n:,}", f"{100 * (1 - e.mean()):.2f}", str(alarms),
                        f"{1e5 * alarms / n:.2f}"])
    print_table(["clean stream", "inputs", "mean P(correct) %", "alarms", "false alarms per 100,000"], fa_rows)
    total_alarms = sum(int(r[3]) for r in fa_rows)
    total_inputs = sum(int(r[1].replace(",", "")) for r in fa_rows)
    print(f"clean false-alarm rate (change detector, all clean streams): {1e5 * total_alarms / total_inputs:.2f} "
          f"per 100,000 inputs ({total_alarms} in {total_inputs:,}); goal <= 1")
    from daic.oracles.change import CusumDetector
    det, batch = CusumDetector(seen.change), np.full(BATCH, 0.01)
    t0 = time.perf_counter()
    for _ in range(2000):
        det.update(batch)
    print(f"cost of the change detector on the sidecar: {1e6 * (time.perf_counter() - t0) / (2000 * BATCH):.2f} "
          f"us per input (batches of {BATCH}); calibration at fit: part of the assessor's fit")

    # Drift alarm on clean windows of every size, and on shifted scenarios.
    print("\nDrift alarm (seen assessor; tolerance "
          f"{seen.config.drift_tolerance}, alpha {seen.window_config().drift_alpha}): false alarms on random "
          "clean windows (200 per size and split)\n")
    drift_rows, any_false = [], 0
    for split, out in (("test", clean_test), ("val", clean_val)):
        sc = out.scores(seen)
        cells = [split]
        for size in DRIFT_SIZES:
            alarms = 0
            for _ in range(200):
                idx = rng.choice(len(out.labels), size=min(size, len(out.labels)), replace=False)
                est = seen.new_estimator(max_count=size)
                est.update(sc.subset(idx))
                alarms += est.estimate().drift_alarm
            any_false += alarms
            cells.append(f"{alarms}/200")
        cells.append(f"{sc.drift.mean():.3f}")
        drift_rows.append(cells)
    print_table(["split"] + [str(s) for s in DRIFT_SIZES] + ["mean percentile"], drift_rows)
    print(f"drift alarm false-alarm rate on clean windows: {any_false}/{200 * len(DRIFT_SIZES) * 2} windows")
    shifted = [r for r in rows if r["group"] in ("corruption", "partial", "mixture")]
    hit = [r for r in shifted if r["alarm"]]
    dropped = [r for r in shifted if ref_acc - r["true"] >= DROP_TRIGGER]
    print(f"drift alarm on shifted scenarios ({WINDOW} inputs, held-out assessors): {len(hit)}/{len(shifted)}; "
          f"with a drop >= {100 * DROP_TRIGGER:.0f} pts: {sum(r['alarm'] for r in dropped)}/{len(dropped)}; "
          f"label shift / clean: {sum(r['alarm'] for r in rows if r['group'] in ('label-shift', 'clean'))}/"
          f"{sum(1 for r in rows if r['group'] in ('label-shift', 'clean'))}")

    # Trust and band: the band model (conformalized quantile regression on the window's features)
    # against the drift-score trust rule with the drift x estimate error model.
    print("\nTrust and band (held-out assessors, one window of each scenario)\n")
    band_rows = []
    method = getattr(next(iter(assessors.values())).band_model, "method", "cqr")
    rules = ((f"band model ({'normalised conformal' if method == 'scale' else 'CQR'} on window features)",
              "trusted", "lower", "upper"),
             ("drift-score rule + error model", "trusted_drift", "lower_drift", "upper_drift"))
    if not rows[0]["band_model"]:  # no band model fitted (the default): only the drift rule
        rules = rules[1:]
    for label, t_key, lo, hi in rules:
        tr = np.array([r[t_key] for r in rows])
        cov = np.array([r[lo] <= r["true"] <= r[hi] for r in rows])
        err = np.array([abs(r["held"] - r["true"]) for r in rows]) * 100
        width = np.array([r[hi] - r[lo] for r in rows]) * 100
        band_rows.append([label, f"{100 * tr.mean():.0f}% ({tr.sum()}/{len(tr)})", f"{100 * cov.mean():.0f}%",
                          f"{100 * cov[tr].mean():.0f}%" if tr.any() else "-",
                          f"{err[tr].mean():.2f}" if tr.any() else "-", f"{err[tr].max():.1f}" if tr.any() else "-",
                          f"{np.median(width):.1f}", f"{np.median(width[tr]):.1f}" if tr.any() else "-"])
    print_table(["rule", "trusted share", "band coverage", "coverage (trusted)", "MAE trusted", "worst trusted",
                 "median band width", "median width (trusted)"], band_rows)
    trusted = np.mean([r["trusted"] for r in rows])
    n_covered = sum(r["lower"] <= r["true"] <= r["upper"] for r in rows)
    covered = n_covered / len(rows)
    print(f"\ntrusted share (held-out, this run's rule: {'band model' if rows[0]['band_model'] else 'drift rule'}): "
          f"{100 * trusted:.0f}% of {len(rows)} scenarios; band coverage "
          f"{100 * covered:.0f}%; held-out-type MAE {100 * np.mean([abs(r['held'] - r['true']) for r in rows]):.2f} pts"
          f"{' (with self-agreement)' if SELF_AGREEMENT else ' (without self-agreement)'}")

    # The five figures issue 17 asks for, in one place.
    seq = [s["delay"]["sequential"] for s in fast]
    mae = 100 * np.mean([abs(r["held"] - r["true"]) for r in rows])
    print("\nIssue 17 summary (held-out assessors unless noted)\n")
    print_table(["figure", "measured", "goal", "met"], [
        ["trigger delay, drops >= 10 pts (sequential)",
         f"median {np.median([d if d is not None else np.inf for d in seq]):.0f} inputs; "
         f"{sum(d is not None and d <= FAST_DELAY for d in seq)}/{len(seq)} within {FAST_DELAY}",
         f"<= {FAST_DELAY} inputs", "yes" if all(d is not None and d <= FAST_DELAY for d in seq) else "no"],
        ["clean false-alarm rate (change detector)", f"{1e5 * total_alarms / total_inputs:.2f} per 100,000",
         "<= 1 per 100,000", "yes" if 1e5 * total_alarms / total_inputs <= 1 else "no"],
        ["drift alarm on clean windows (50-5,000 inputs)", f"{any_false}/{200 * len(DRIFT_SIZES) * 2}", "0",
         "yes" if any_false == 0 else "no"],
        ["held-out-type MAE", f"{mae:.2f} pts", "<= 3 pts", "yes" if mae <= 3 else "no"],
        ["trusted share / band coverage", f"{100 * trusted:.0f}% ({int(np.sum([r['trusted'] for r in rows]))}/"
         f"{len(rows)}) / {100 * covered:.1f}% ({n_covered}/{len(rows)})",
         "more trusted, coverage >= 95%", "coverage " + (
             "yes" if covered >= 0.95 else "no")],
    ])
    print(replicate_spread(rows))


def paired_section(models, types) -> None:
    """Paired development comparison on the scenarios of ``types`` (one outer fold): one
    held-out assessor fitted without the fold's types, without and with self-agreement; each
    scenario's window estimated with the band model and with the drift-score rule."""
    from daic.data.corruptions import CORRUPTIONS
    from daic.oracles.pipeline import AssessorConfig, OnlineAssessor

    global SELF_AGREEMENT
    fold_of = {n: i % OUTER_FOLDS for i, n in enumerate(CORRUPTIONS)}
    folds = {fold_of[t] for t in types}
    if len(folds) != 1:
        raise SystemExit(f"--paired-types must share one outer fold; folds: {sorted(folds)}")
    excluded = frozenset(n for n in CORRUPTIONS if fold_of[n] in folds)
    cases = [(i, c) for i, c in enumerate(scenario_cases(CORRUPTIONS))
             if c.group == "corruption" and c.corruptions[0] in types]
    res = {}
    for sa in (False, True):
        SELF_AGREEMENT = sa
        ref, shifted = references(models)
        t0 = time.time()
        a = OnlineAssessor(AssessorConfig(band_model=True)).fit(ref, shifted.without_types(excluded))
        print(f"fit without {sorted(excluded)}, self-agreement {sa}: {time.time() - t0:.0f}s", flush=True)
        for i, c in cases:
            o = scenario_outputs(models, c, seed=1000 + i)
            sc = o.scores(a)
            for band in (True, False):
                est = a.new_estimator(max_count=len(o.labels))
                if not band:
                    est.band_model = None
                est.update(sc)
                e = est.estimate()
                res[(sa, band, c.name)] = (float(o.correct.mean()), e.accuracy, e.trusted, e.lower, e.upper)
    print(f"\nPaired comparison, held-out types {sorted(excluded)} (scenarios of {', '.join(types)}); "
          f"accuracy %, errors in points, T = trusted (band model / drift rule)\n")
    table = []
    for _, c in cases:
        t, e0, tb0, *_ = res[(False, True, c.name)]
        _, e1, tb1, *_ = res[(True, True, c.name)]
        td0, td1 = res[(False, False, c.name)][2], res[(True, False, c.name)][2]
        table.append([c.name, f"{100 * t:.1f}", f"{100 * e0:.1f}", _pts(e0 - t), f"{100 * e1:.1f}", _pts(e1 - t),
                      f"{'T' if tb0 else '-'}/{'T' if td0 else '-'}", f"{'T' if tb1 else '-'}/{'T' if td1 else '-'}"])
    print_table(["scenario", "true", "without SA", "err", "with SA", "err", "trust w/o SA", "trust with SA"], table)
    for sa in (False, True):
        err = np.array([abs(res[(sa, True, c.name)][1] - res[(sa, True, c.name)][0]) for _, c in cases]) * 100
        parts = []
        for band, label in ((True, "band model"), (False, "drift rule")):
            r = [res[(sa, band, c.name)] for _, c in cases]
            tr = np.array([x[2] for x in r])
            cov = np.array([x[3] <= x[0] <= x[4] for x in r])
            parts.append(f"{label}: trusted {tr.sum()}/{len(r)}, coverage {100 * cov.mean():.0f}%, "
                         f"median band {100 * np.median([x[4] - x[3] for x in r]):.1f} pts")
        print(f"{'with' if sa else 'without'} self-agreement: MAE {err.mean():.2f} (worst {err.max():.1f}); "
              + "; ".join(parts))


def cost_section(models, seen, clean_test, batch: int = 100, repeats: int = 20) -> None:
    """CPU cost per input, at batches of ``batch``, of what the scoring side computes per
    prediction: the self-agreement views (K forward passes of the champion) and the assessor's
    score (all oracles and the combiner)."""
    import torch

    from daic.data.mnist import load_split
    from daic.oracles.self_agreement import self_agreement, view_probs

    images = np.ascontiguousarray(load_split("test").images[:batch])
    out = clean_test.subset(np.arange(batch))
    timings = {}
    view_probs(models.model, images, VIEWS)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        self_agreement(out.probs, view_probs(models.model, images, VIEWS))
    sa_cost = (time.perf_counter() - t0) / (repeats * batch)
    if SELF_AGREEMENT:
        timings[f"self-agreement ({len(VIEWS)} views of the champion)"] = sa_cost
    out.scores(seen)
    t0 = time.perf_counter()
    for _ in range(repeats):
        out.scores(seen)
    timings["assessor score (oracles, combiner)"] = (time.perf_counter() - t0) / (repeats * batch)
    est = seen.new_estimator(max_count=SIDECAR_WINDOW)
    sc = out.scores(seen)
    t0 = time.perf_counter()
    for _ in range(repeats):
        est.update(sc)
        est.estimate()
    timings[f"window update + estimate (window {SIDECAR_WINDOW}, per batch)"] = (time.perf_counter() - t0) / (repeats * batch)
    print(f"\nCost per input on the scoring side (CPU, {torch.get_num_threads()} torch threads, batches of {batch}): "
          + "; ".join(f"{k} {1e3 * v:.3f} ms" for k, v in timings.items())
          + f"; total {1e3 * sum(timings.values()):.3f} ms per input"
          + ("" if SELF_AGREEMENT else f" (self-agreement, not used in this run, would add {1e3 * sa_cost:.3f} ms: "
             f"{len(VIEWS)} views of the champion)"))


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
    print(replicate_spread(rows))
    worst = max(rows, key=lambda r: abs(r["held"] - r["true"]))
    big_trusted = [r for r in rows if r["trusted"] and abs(r["held"] - r["true"]) > 0.10]
    print(f"\nworst held-out case: {worst['name']} (error {_pts(worst['held'] - worst['true'])}, "
          f"{'trusted' if worst['trusted'] else 'flagged untrusted'}); trusted scenarios with error > 10 pts: "
          f"{len(big_trusted)} {[r['name'] for r in big_trusted]}")
    n_covered = sum(r["lower"] <= r["true"] <= r["upper"] for r in rows)
    covered_t = [r["lower"] <= r["true"] <= r["upper"] for r in rows if r["trusted"]]
    print(f"95% band covers the truth: {100 * n_covered / len(rows):.1f}% of scenarios ({n_covered}/{len(rows)}), "
          f"{100 * np.mean(covered_t):.1f}% of trusted ones ({sum(covered_t)}/{len(covered_t)})")
    misses = [r for r in rows if not r["lower"] <= r["true"] <= r["upper"]]
    if misses:
        print("band misses (truth outside the band): " + "; ".join(
            f"{r['name']} true {100 * r['true']:.1f}, band [{100 * r['lower']:.1f}, {100 * r['upper']:.1f}]"
            f"{'' if r['trusted'] else ' untrusted'}" for r in misses))

    for label, key in (("held-out, sequential", "trigger"), ("seen, sequential", "trigger_seen"),
                       ("held-out, window only", "trigger_window"), ("seen, window only", "trigger_seen_window")):
        must = [r for r in rows if ref_acc - r["true"] >= DROP_TRIGGER]
        quiet = [r for r in rows if ref_acc - r["true"] <= DROP_QUIET]
        recall = np.mean([r[key] for r in must])
        false = np.mean([r[key] for r in quiet])
        missed = [r["name"] for r in must if not r[key]]
        fired = [r["name"] for r in quiet if r[key]]
        margin = getattr(policy, "untrusted_margin_sd", None)
        untrusted = "untrusted with a drift alarm" + (
            "" if margin is None else f" and a drop within {margin:g} error SD of the estimate")
        change = ", or the change alarm (CUSUM)" if "sequential" in label else ""
        print(f"\ntrigger ({label}; policy: estimate < reference - {100 * args.trigger_drop:.0f} pts, or {untrusted}{change}): "
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
