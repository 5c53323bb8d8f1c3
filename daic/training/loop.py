"""The training loop of one data-parallel worker, independent of Ray.

``fit`` runs the epochs; the Ray worker (``daic.training.worker``) calls it with Ray Train's
device, DDP wrapper and a per-epoch report, the plain-PyTorch baseline of the throughput
benchmark calls it with none of them -- the same code measured both ways.

Both networks (the main model and its shadow) are trained on the same batches, each with its own
Adam optimizer and one-cycle schedule (Smith & Topin 2019). A warm start loads the given weights
into both before the first step (continual development: Gesmundo 2022).
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from daic.models.networks import build
from daic.models.weights import state_dict_from_bytes
from daic.training.augment import augment_batch
from daic.training.batches import DeviceBatches, PinnedHostBatches
from daic.training.config import TrainConfig
from daic.training.device_plan import TrainPlan, choose, probe
from daic.training.precision import autocast_dtype
from daic.training.semi_supervised import (UnlabeledPool, adapt_batchnorm, agreed_pseudo_labels, bn_adaptation_images,
                                           consistency_targets, masked_consistency, pseudo_labeled)
from daic.training.sharding import batch_bounds, epoch_pool, shard_order, steps_per_epoch

MAIN, SHADOW = "model", "shadow"
log = logging.getLogger(__name__)
ARCH = {MAIN: "small_cnn", SHADOW: "shadow_net"}


@dataclass
class WarmStart:
    """Serialized state_dicts to start from (``None`` for a network = fresh initialisation)."""

    weights: dict[str, Optional[bytes]] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalSet:
    images: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class ConsistencyBatch:
    """One step's unlabelled batch for the consistency term, and its settings."""

    images: torch.Tensor
    weight: float
    threshold: float
    generator: torch.Generator


@dataclass(frozen=True)
class FitResult:
    nets: dict[str, nn.Module]  # unwrapped (no DDP, not compiled), on the training device
    precision: str  # what the worker actually trained in: fp32, bf16 or fp16
    plan: TrainPlan  # batch size, learning rate, compile and data placement, with the reasons


def plan_for(config: TrainConfig, device: torch.device, n_examples: int, world_size: int) -> TrainPlan:
    """The config's requests resolved on this worker's device (``daic.training.device_plan``)."""
    return choose(probe(device), precision=config.precision, batch_size=config.batch_size, lr=config.lr,
                  lr_scaling=config.lr_scaling, compile=config.compile, data_on_device=config.data_on_device,
                  n_examples=n_examples, world_size=world_size)


def init_networks(config: TrainConfig, warm: WarmStart | None) -> dict[str, nn.Module]:
    """Identical initial weights on every worker: seeded by ``config.seed`` alone."""
    torch.manual_seed(config.seed)
    nets = {name: build(ARCH[name]) for name in (MAIN, SHADOW)}
    for name, net in nets.items():
        blob = (warm.weights.get(name) if warm else None)
        if blob is not None:
            net.load_state_dict(state_dict_from_bytes(blob, source=f"warm start {name}"))
    return nets


def sample_weights(n_base: int, n_operational: int, operational_weight: float) -> np.ndarray:
    return np.concatenate([np.ones(n_base, np.float32), np.full(n_operational, operational_weight, np.float32)])


def repeats_for_share(minimum: int, share: float | None, n_other: int, n: int) -> int:
    """How often each of ``n`` examples appears per epoch beside ``n_other`` seen once: at least
    ``minimum``, raised so that they make up at least ``share`` of the two (None or 0: no share)."""
    if not share or not n:
        return minimum
    return max(minimum, math.ceil(share * n_other / ((1 - share) * n)))


def operational_repeats(config: TrainConfig, n_base: int, n_operational: int) -> int:
    """How often each labelled operational example appears per epoch: ``operational_oversample``,
    raised so that they make up at least ``operational_share`` of the epoch when that is set."""
    return repeats_for_share(config.operational_oversample, config.operational_share, n_base, n_operational)


def pseudo_repeats(config: TrainConfig, n_base: int, n_pseudo: int) -> int:
    """How often each pseudo-labelled example appears per epoch: once, raised so that they make up
    at least ``pseudo_label_share`` of the base part (base images + pseudo-labels) when that is set;
    without it a thousand pseudo-labels drown in a 55,000-image base split, as labels did before
    ``operational_share``."""
    return repeats_for_share(1, config.pseudo_label_share, n_base, n_pseudo)


class Fitter:
    """Optimizers, schedules and precision for a set of networks trained on the same batches."""

    def __init__(self, nets: dict[str, nn.Module], config: TrainConfig, device: torch.device, total_steps: int,
                 plan: TrainPlan):
        self.nets = nets
        self.device = device
        self.precision = plan.precision
        self.dtype = autocast_dtype(self.precision)
        self.optimizers = {k: torch.optim.Adam(n.parameters(), lr=plan.lr, weight_decay=config.weight_decay)
                           for k, n in nets.items()}
        self.schedulers = {k: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=plan.lr, total_steps=total_steps)
                           for k, o in self.optimizers.items()}
        # Loss scaling only for fp16 (its narrow exponent range underflows small gradients).
        self.scalers = {k: torch.amp.GradScaler(device.type, enabled=self.precision == "fp16") for k in nets}

    def step(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
             unlabeled: Optional["ConsistencyBatch"] = None) -> dict[str, torch.Tensor]:
        """One optimizer step per network; returns detached (weighted loss sum, correct count).
        With ``unlabeled``, FixMatch's consistency term is added (``daic.training.semi_supervised``)."""
        out = {}
        for name, net in self.nets.items():
            inputs = x
            if unlabeled is not None:
                strong, target, mask = consistency_targets(net, unlabeled.images, unlabeled.threshold,
                                                           unlabeled.generator, self.dtype)
                inputs = torch.cat([x.unsqueeze(1) if x.dim() == 3 else x, strong])
            with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
                logits = net(inputs)
            if unlabeled is not None:
                logits, strong_logits = logits[:len(y)], logits[len(y):]
            per_example = F.cross_entropy(logits.float(), y, reduction="none")
            loss = (per_example * w).sum() / w.sum()
            if unlabeled is not None:
                loss = loss + unlabeled.weight * masked_consistency(strong_logits, target, mask)
            opt = self.optimizers[name]
            opt.zero_grad(set_to_none=True)
            self.scalers[name].scale(loss).backward()
            self.scalers[name].step(opt)
            self.scalers[name].update()
            self.schedulers[name].step()
            out[name] = torch.stack([loss.detach() * len(y), (logits.detach().argmax(1) == y).sum().float()])
        return out


def fit(
    config: TrainConfig,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    n_base: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    warm: WarmStart | None = None,
    wrap: Callable[[nn.Module], nn.Module] = lambda net: net,
    val: EvalSet | None = None,
    on_epoch: Callable[[dict[str, float], dict[str, nn.Module]], None] = lambda metrics, nets: None,
    progress: bool = False,
    unlabeled: UnlabeledPool | None = None,
    operational_weights: np.ndarray | None = None,
) -> FitResult:
    """Train for ``config.epochs`` epochs; ``on_epoch(metrics, nets)`` after each one.

    ``images``/``labels`` hold base examples first (``n_base``), then operational ones.
    Metrics (every worker): epoch, train loss/accuracy on this worker's shard, epoch time and
    samples/s (global = this worker's count x world size); with ``val`` also val accuracy.
    ``unlabeled``: the operational pool for the config's semi-supervised options (pseudo-labels join
    the base examples; consistency adds a term to every step; AdaBN runs after the last epoch).
    ``operational_weights``: (n_operational,) per labeled input, multiplying ``operational_weight``
    in the loss (collect-labels' ``train_weighting``; :mod:`daic.training.data`).
    """
    from daic.models.inference import accuracy

    if config.augment == "select":
        selection = select_recipe(config, images, labels, n_base=n_base, device=device, rank=rank,
                                  world_size=world_size, warm=warm, wrap=wrap, unlabeled=unlabeled,
                                  operational_weights=operational_weights)
        report = on_epoch

        def on_epoch(metrics: dict[str, float], nets: dict[str, nn.Module]) -> None:
            report({**metrics, **selection.metrics()}, nets)

        config = config.model_copy(update={"augment": selection.chosen})
    plain = {k: n.to(device) for k, n in init_networks(config, warm).items()}
    n_pseudo = 0
    if unlabeled is not None and config.pseudo_label_threshold is not None:
        # Pseudo-labels from the warm-start model (or the pool's teacher), before any step: ordinary
        # examples after the base, repeated to pseudo_label_share of the base part.
        px, py = pseudo_labeled(plain[MAIN], unlabeled, config.pseudo_label_threshold, config.pseudo_label_score,
                                device)
        n_pseudo = len(py)
        images = np.concatenate([images[:n_base], px, images[n_base:]]).astype(np.float32, copy=False)
        labels = np.concatenate([labels[:n_base], py, labels[n_base:]])
        n_base += n_pseudo
    n_op = len(labels) - n_base
    pool = epoch_pool(n_base, n_op, operational_repeats(config, n_base, n_op))
    extra = pseudo_repeats(config, n_base - n_pseudo, n_pseudo) - 1
    if extra > 0:
        pool = np.concatenate([pool, np.tile(np.arange(n_base - n_pseudo, n_base, dtype=np.int64), extra)])
    plan = plan_for(config, device, len(pool), world_size)
    # Compile the plain module, then wrap (DDP over a compiled module); checkpoints and evaluation
    # use ``plain``, whose parameters are the ones trained.
    nets = {k: wrap(torch.compile(n) if plan.compile else n) for k, n in plain.items()}
    total_steps = config.epochs * steps_per_epoch(len(pool), world_size, plan.batch_size)
    fitter = Fitter(nets, config, device, total_steps, plan)
    weights = sample_weights(n_base, n_op, config.operational_weight)
    if operational_weights is not None:  # per labeled input, as collect-labels' train_weighting set them
        if np.shape(operational_weights) != (n_op,):
            raise ValueError(f"operational_weights must have shape ({n_op},), got {np.shape(operational_weights)}")
        weights[n_base:] *= np.asarray(operational_weights, np.float32)
    if plan.data_on_device:
        source = DeviceBatches(images, labels, weights, device)
    else:
        source = PinnedHostBatches(images, labels, weights, device, plan.batch_size)
    # Dropout differs per worker (as independent data would), initial weights do not.
    torch.manual_seed(config.seed * 1009 + rank + 1)
    use_consistency = unlabeled is not None and config.consistency_weight > 0
    if use_consistency:
        u_images = torch.as_tensor(unlabeled.images, device=device)
        u_gen = torch.Generator(device=device)
        u_gen.manual_seed(config.seed * 7919 + rank + 1)
    if config.augment != "off":
        a_gen = torch.Generator(device=device)
        a_gen.manual_seed(config.seed * 6271 + rank + 1)
    for epoch in range(config.epochs):
        for net in nets.values():
            net.train()
        order = shard_order(pool, seed=config.seed, epoch=epoch, rank=rank, world_size=world_size)
        bounds = batch_bounds(len(order), plan.batch_size)
        totals = {k: torch.zeros(2, device=device) for k in nets}
        seen = len(order)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        iterator = source.epoch(order, bounds)
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, total=len(bounds), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False)
        operational = torch.from_numpy(order >= n_base).to(device) if config.augment != "off" else None
        for (lo, hi), (x, y, w) in zip(bounds, iterator):
            if operational is not None:
                x = augment_batch(x, operational[lo:hi], config.augment, config.augment_share, a_gen)
            batch = None
            if use_consistency:
                rows = torch.randint(0, len(u_images), (len(y),), generator=u_gen, device=device)
                batch = ConsistencyBatch(u_images[rows], config.consistency_weight, config.consistency_threshold,
                                         u_gen)
            for k, v in fitter.step(x, y, w, batch).items():
                totals[k] += v
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        metrics: dict[str, float] = {
            "epoch": epoch + 1,
            "epoch_time_s": seconds,
            "samples_per_s": seen * world_size / seconds,
            "world_size": world_size,
        }
        for k, (loss_sum, correct) in totals.items():
            prefix = "" if k == MAIN else f"{k}_"
            metrics[f"{prefix}train_loss"] = float(loss_sum) / seen
            metrics[f"{prefix}train_accuracy"] = float(correct) / seen
        if unlabeled is not None and config.bn_adapt != "off" and epoch == config.epochs - 1:
            adapt_images = bn_adaptation_images(unlabeled, images[:n_base - n_pseudo], config.bn_adapt, config.seed)
            for net in plain.values():
                adapt_batchnorm(net, adapt_images, device, seed=config.seed)
        if n_pseudo or use_consistency:
            metrics["pseudo_labels"] = float(n_pseudo)
        if val is not None:
            for k, net in plain.items():
                prefix = "" if k == MAIN else f"{k}_"
                metrics[f"{prefix}val_accuracy"] = accuracy(net, val.images, val.labels, device=device)
        on_epoch(metrics, plain)
    if unlabeled is not None and config.self_training_rounds > 0:
        return self_train(config, images[:n_base - n_pseudo], labels[:n_base - n_pseudo], images[n_base:],
                          labels[n_base:], plain, unlabeled, device=device, rank=rank, world_size=world_size,
                          wrap=wrap, val=val, on_epoch=on_epoch, progress=progress,
                          operational_weights=operational_weights)
    return FitResult(plain, fitter.precision, plan)


#: Fewer held-out labelled inputs than this and ``augment="select"`` takes its first candidate untried.
SELECT_MIN_HELD_OUT = 10


@dataclass(frozen=True)
class Selection:
    """Which retraining recipe ``augment="select"`` chose, and on what evidence."""

    chosen: str
    candidates: tuple[str, ...]
    held_out: int  # labelled inputs held out of the candidates' training (0: not tried)
    correct: dict[str, int] = field(default_factory=dict)  # per candidate, of the held-out inputs
    nll: dict[str, float] = field(default_factory=dict)  # mean cross-entropy on them

    def metrics(self) -> dict[str, float]:
        """Floats for the epoch history (and so the model card): the chosen index and each score."""
        out = {"select_held_out": float(self.held_out),
               "select_chosen": float(self.candidates.index(self.chosen))}
        for name in self.correct:
            out[f"select_{name}_accuracy"] = self.correct[name] / max(1, self.held_out)
            out[f"select_{name}_nll"] = self.nll[name]
        return out


def held_out_rows(n_base: int, n_operational: int, share: float, seed: int) -> np.ndarray:
    """Rows (into base-then-operational arrays) of the labelled inputs held out for the choice:
    ``round(share * n_operational)`` of them, drawn with the run's seed (every worker draws the same)."""
    n_held = int(round(share * n_operational))
    rng = np.random.default_rng(seed * 4099 + 17)
    return n_base + np.sort(rng.permutation(n_operational)[:n_held])


def select_recipe(config: TrainConfig, images: np.ndarray, labels: np.ndarray, *, n_base: int,
                  device: torch.device, rank: int = 0, world_size: int = 1, warm: WarmStart | None = None,
                  wrap: Callable[[nn.Module], nn.Module] = lambda net: net, unlabeled: UnlabeledPool | None = None,
                  operational_weights: np.ndarray | None = None) -> Selection:
    """Choose the run's recipe among ``config.select_candidates`` on labelled inputs it does not train on.

    No fixed recipe wins on every shift: the corruption family helps where the drift is of a kind it
    contains and can hurt where it is not (docs/benchmarks/improvement.md). So a share
    ``select_share`` of the labelled operational inputs is held out, one challenger per candidate is
    trained (same seed, same warm start, same settings otherwise) on the base split and the other
    labelled inputs, and the candidate whose main network classifies the held-out inputs best wins
    (most correct; ties: lowest mean cross-entropy; then the first candidate). The candidates see
    only the first ``select_base_limit`` base images (they rank recipes; the final run uses all).
    The held-out inputs are the training share of the cycle's labels: the inputs the evaluate step
    holds out never reach the trainer, so its promotion decision stays unbiased. With fewer than :data:`SELECT_MIN_HELD_OUT`
    held-out inputs the first candidate is taken untried. With several workers every worker trains
    the same candidates and rank 0's choice is broadcast."""
    candidates = tuple(config.select_candidates)
    n_op = len(labels) - n_base
    held = held_out_rows(n_base, n_op, config.select_share, config.seed)
    if len(held) < SELECT_MIN_HELD_OUT or len(held) >= n_op:
        return Selection(candidates[0], candidates, 0)
    n_probe = n_base if config.select_base_limit is None else min(n_base, config.select_base_limit)
    keep = np.setdiff1d(np.concatenate([np.arange(n_probe), np.arange(n_base, n_base + n_op)]), held)
    weights = None
    if operational_weights is not None:
        weights = np.asarray(operational_weights)[keep[keep >= n_base] - n_base]
    hx = torch.as_tensor(np.asarray(images[held], np.float32)).unsqueeze(1)
    hy = torch.as_tensor(np.asarray(labels[held], np.int64))
    correct, nll = {}, {}
    kept_x, kept_y = images[keep], labels[keep]
    for name in candidates:
        if rank == 0:
            log.info("choosing the recipe: training candidate %r without %d held-out labels", name, len(held))
        probe = config.model_copy(update={"augment": name})
        result = fit(probe, kept_x, kept_y, n_base=n_probe, device=device, rank=rank,
                     world_size=world_size, warm=warm, wrap=wrap, unlabeled=unlabeled, operational_weights=weights)
        net = result.nets[MAIN].eval()
        with torch.no_grad():
            logits = torch.cat([net(hx[i:i + 512].to(device)).float().cpu() for i in range(0, len(hy), 512)])
        correct[name] = int((logits.argmax(1) == hy).sum())
        nll[name] = float(F.cross_entropy(logits, hy))
    best = min(range(len(candidates)), key=lambda i: (-correct[candidates[i]], nll[candidates[i]], i))
    if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        choice = torch.tensor([best], device=device)
        torch.distributed.broadcast(choice, src=0)
        best = int(choice.item())
    if rank == 0:
        log.info("recipe %r chosen: %s of %d held-out labels correct", candidates[best],
                 ", ".join(f"{c} {correct[c]}" for c in candidates), len(held))
    return Selection(candidates[best], candidates, len(held), correct, nll)


def self_train(config: TrainConfig, base_x: np.ndarray, base_y: np.ndarray, op_x: np.ndarray, op_y: np.ndarray,
               teacher: dict[str, nn.Module], unlabeled: UnlabeledPool, **kwargs) -> FitResult:
    """One self-training round: the trained challenger (``teacher``) pseudo-labels the pool where it
    is confident and agrees with itself under weak shifts (:func:`agreed_pseudo_labels`); those join
    the base examples ``self_training_repeat`` times and training continues from the teacher's
    weights for ``self_training_epochs`` epochs (a fresh one-cycle schedule). Every worker computes
    the same pseudo-labels (same weights, same seed). Further rounds recurse."""
    from daic.models.weights import state_dict_to_bytes

    keep, py = agreed_pseudo_labels(teacher[MAIN], unlabeled.images, config.self_training_threshold,
                                    kwargs["device"], seed=config.seed + config.self_training_rounds)
    px = np.repeat(unlabeled.images[keep], config.self_training_repeat, axis=0)
    py = np.repeat(py, config.self_training_repeat)
    images = np.concatenate([base_x, px, op_x]).astype(np.float32, copy=False)
    labels = np.concatenate([base_y, py, op_y])
    nxt = config.model_copy(update={"self_training_rounds": config.self_training_rounds - 1,
                                    "epochs": config.self_training_epochs, "pseudo_label_threshold": None,
                                    "consistency_weight": 0.0})
    warm = WarmStart({k: state_dict_to_bytes(n) for k, n in teacher.items()})
    on_epoch = kwargs.pop("on_epoch")

    def report(metrics: dict[str, float], nets: dict[str, nn.Module]) -> None:
        on_epoch({**metrics, "epoch": config.epochs + metrics["epoch"], "self_training_labels": float(len(keep))},
                 nets)

    return fit(nxt, images, labels, n_base=len(base_y) + len(py), warm=warm, on_epoch=report,
               unlabeled=unlabeled, **kwargs)
