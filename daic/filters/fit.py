"""The filter's training loop for one data-parallel worker, independent of Ray (as
daic.training.loop is for the classifier; the Ray worker calls it with Ray's device and DDP wrapper).

Each step takes a batch of corrupted training images (restoration + task loss, see
:mod:`daic.filters.objective`) and, when there is an operational pool, a batch of pool inputs
(information maximisation). The classifier is frozen (eval mode, no gradients to its weights):
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
from daic.filters.network import build_filter
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
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(1, steps))
    pool_rng = np.random.default_rng([config.seed, rank, 7])
    for epoch in range(config.epochs):
        net.train()
        order = shard_order(index, seed=config.seed, epoch=epoch, rank=rank, world_size=world_size)
        bounds = batch_bounds(len(order), config.batch_size)
        totals = np.zeros(4)
        start = time.perf_counter()
        iterator = bounds
        if progress:
            from tqdm import tqdm

            iterator = tqdm(bounds, desc=f"filter epoch {epoch + 1}/{config.epochs}", leave=False)
        for a, b in iterator:
            idx = torch.from_numpy(order[a:b])
            x, target, y = noisy[idx].to(device), clean[idx].to(device), labels[idx].to(device)
            restored = net(x)
            l_restore = restoration_loss(restored, target)
            l_task = task_loss(classifier(restored), y)
            loss = config.restore_weight * l_restore + config.task_weight * l_task
            l_pool = torch.zeros((), device=device)
            if len(pool) and config.pool_weight > 0:
                pick = torch.from_numpy(pool_rng.integers(0, len(pool), size=min(len(pool), config.batch_size)))
                l_pool = information_maximisation(classifier(net(pool[pick].to(device))))
                loss = loss + config.pool_weight * l_pool
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            totals += (b - a) * np.array([float(v.detach()) for v in (loss, l_restore, l_task, l_pool)])
        seen = max(1, len(order))
        seconds = time.perf_counter() - start
        metrics = {"epoch": epoch + 1, "epoch_time_s": seconds, "samples_per_s": seen * world_size / seconds,
                   "world_size": world_size, "train_loss": totals[0] / seen, "restore_loss": totals[1] / seen,
                   "task_loss": totals[2] / seen, "pool_loss": totals[3] / seen}
        on_epoch(metrics, plain)
    return plain
