"""The filter's training loop for one data-parallel worker, independent of Ray (as
daic.training.loop is for the classifier; the Ray worker calls it with Ray's device and DDP wrapper).

Each step takes a batch of corrupted training images (restoration + task loss, see
:mod:`daic.filters.objective`) and, when there is an operational pool, a batch of pool inputs
(information maximisation). The filter's forward here is its restoration and canonical form
(:mod:`daic.filters.network`; the alignment search has no parameters and needs no fit). The
canonical centre is measured on the clean training images. With ``max_seconds`` the run stops
when the budget is spent, its learning rate annealed (cosine) over the larger of the step and the
time fractions, so a cycle's adaptation is done in time whatever the machine; several workers
stop together (the flag is all-reduced). The classifier is frozen (eval mode, no gradients to its weights):
gradients flow through it into the filter only. Sharding and batch order are the classifier's
(daic.training.sharding), so N workers see disjoint shards.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Optional

import numpy as np
import torch
from torch import nn

from daic.filters.config import FilterConfig
from daic.filters.data import FilterData
from daic.filters.network import build_filter, centre_of_mass
from daic.filters.objective import information_maximisation, restoration_loss, task_loss
from daic.training.sharding import batch_bounds, epoch_pool, shard_order


def freeze(classifier: nn.Module) -> nn.Module:
    classifier.eval()
    for p in classifier.parameters():
        p.requires_grad_(False)
    return classifier


def fit_filter(
    config: FilterConfig,
    data: FilterData,
    classifier: nn.Module,
    *,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    warm: Optional[dict] = None,
    wrap: Callable[[nn.Module], nn.Module] = lambda net: net,
    on_epoch: Callable[[dict[str, float], nn.Module], None] = lambda metrics, net: None,
    progress: bool = False,
) -> nn.Module:
    """Train for ``config.epochs`` epochs and return the plain (unwrapped) filter."""
    torch.manual_seed(config.seed)
    plain = build_filter()
    if warm is not None:
        plain.load_state_dict(warm)
    plain.configure(canonical=config.canonical, align_angles=config.align_angles, align_margin=config.align_margin,
                    centre=_training_centre(data.clean), recentre_search=config.recentre == "search")
    plain = plain.to(device)
    net = wrap(plain)
    classifier = freeze(classifier.to(device))
    clean = torch.from_numpy(np.array(data.clean))
    noisy = torch.from_numpy(np.array(data.corrupted))
    labels = torch.from_numpy(np.array(data.labels))
    pool = torch.from_numpy(np.array(data.pool))
    index = epoch_pool(len(clean), 0, 1)
    steps = config.epochs * len(batch_bounds(len(shard_order(index, seed=config.seed, epoch=0, rank=rank,
                                                                          world_size=world_size)),
                                              config.batch_size))
    opt = torch.optim.Adam(plain.parameters(), lr=config.lr)
    budget = config.max_seconds
    sched = None if budget else torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(1, steps))
    pool_rng = np.random.default_rng([config.seed, rank, 7])
    began, step, stopped = time.perf_counter(), 0, False
    for epoch in range(config.epochs):
        if stopped:
            break
        net.train()
        order = shard_order(index, seed=config.seed, epoch=epoch, rank=rank, world_size=world_size)
        bounds = batch_bounds(len(order), config.batch_size)
        totals = np.zeros(4)
        seen, right = 0, 0
        start = time.perf_counter()
        iterator = bounds
        if progress:
            from tqdm import tqdm

            iterator = tqdm(bounds, desc=f"filter epoch {epoch + 1}/{config.epochs}", leave=False)
        for a, b in iterator:
            if budget:
                frac = max(step / max(1, steps), (time.perf_counter() - began) / budget)
                if _stop_together(frac >= 1.0, device, world_size):
                    stopped = True
                    break
                for group in opt.param_groups:
                    group["lr"] = budget_lr(config.lr, frac, warm_start=warm is not None)
            step += 1
            idx = torch.from_numpy(order[a:b])
            x, target, y = noisy[idx].to(device), clean[idx].to(device), labels[idx].to(device)
            restored = net(x)
            l_restore = restoration_loss(restored, target)
            logits = classifier(restored)
            l_task = task_loss(logits, y)
            loss = config.restore_weight * l_restore + config.task_weight * l_task
            l_pool = torch.zeros((), device=device)
            if len(pool) and config.pool_weight > 0:
                pick = torch.from_numpy(pool_rng.integers(0, len(pool), size=min(len(pool), config.batch_size)))
                l_pool = information_maximisation(classifier(net(pool[pick].to(device))))
                loss = loss + config.pool_weight * l_pool
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            totals += (b - a) * np.array([float(v.detach()) for v in (loss, l_restore, l_task, l_pool)])
            seen += b - a
            right += int((logits.detach().argmax(dim=1) == y).sum())
        if seen == 0:  # the budget ran out at an epoch's start: the previous epoch is the last reported
            break
        seconds = time.perf_counter() - start
        metrics = {"epoch": epoch + 1, "epoch_time_s": seconds, "samples_per_s": seen * world_size / seconds,
                   "world_size": world_size, "train_loss": totals[0] / seen, "restore_loss": totals[1] / seen,
                   "task_loss": totals[2] / seen, "pool_loss": totals[3] / seen, "steps": step,
                   # the frozen classifier's accuracy on the filtered corrupted training inputs
                   "train_accuracy": right / seen,
                   "budget_stopped": float(stopped)}
        on_epoch(metrics, plain)
    return plain


def budget_lr(lr: float, progress: float, *, warm_start: bool) -> float:
    """Cosine annealing over ``progress`` in [0, 1] (a 10 % linear warm-up unless warm-started)."""
    progress = min(max(progress, 0.0), 1.0)
    scale = 0.5 * (1.0 + np.cos(np.pi * progress))
    if not warm_start and progress < 0.1:
        scale *= max(progress / 0.1, 0.01)
    return float(lr * scale)


def _stop_together(stop: bool, device: torch.device, world_size: int) -> bool:
    if world_size <= 1:
        return stop
    import torch.distributed as dist

    flag = torch.tensor([1.0 if stop else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item() > 0)


def _training_centre(clean: np.ndarray) -> tuple[float, float]:
    """Mean ink centre of mass of (up to 5,000) clean training images: where the canonical form
    re-centres inputs to."""
    if len(clean) == 0:
        from daic.filters.network import DEFAULT_CENTRE

        return DEFAULT_CENTRE
    x = torch.from_numpy(np.array(clean[:5000], dtype=np.float32)).unsqueeze(1)
    r, c = centre_of_mass(x)
    keep = torch.isfinite(r) & torch.isfinite(c)
    return float(r[keep].mean()), float(c[keep].mean())
