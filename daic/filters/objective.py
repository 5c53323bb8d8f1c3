"""The filter's training objectives (pure torch functions; cited in the package docstring).

Why these and not a reconstruction objective on the operational pool: the pool holds corrupted
inputs and no clean targets, so reconstructing them would teach the filter to *reproduce* the
corruption. What the wrapped model's accuracy depends on is the classifier's output on the
filtered input, so the label-free term acts there: information maximisation (Liang et al. 2020,
SHOT; the entropy part is TENT, Wang et al. 2021) -- each filtered input confidently one class
(low conditional entropy) while the pool as a whole stays spread over the classes (high marginal
entropy, which rules out the collapse of mapping everything to one confident digit). The
supervised terms on corrupted training images (restore the clean image; keep the classifier right
on it, with the training labels) anchor the filter to the training distribution.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


def restoration_loss(restored: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(restored, clean)


def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels)


def information_maximisation(logits: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean per-input entropy minus the entropy of the mean prediction (SHOT's L_ent - L_div)."""
    p = torch.softmax(logits.float(), dim=1)
    conditional = -(p * torch.log(p + eps)).sum(dim=1).mean()
    marginal = p.mean(dim=0)
    diversity = -(marginal * torch.log(marginal + eps)).sum()
    return conditional - diversity
