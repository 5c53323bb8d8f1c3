"""The filter network: a learned restoration, a parameter-free canonical form, and a test-time
alignment search with the classifier it wraps.

1. **Restoration**: a two-level U-Net (Ronneberger et al. 2015) with a residual output,
   ``clip(x + r(x), 0, 1)``: the network predicts a correction, so the identity (the right answer
   for a clean input) is the easy function to learn and an untrained filter is a pass-through.
   28x28 -> 14x14 -> 28x28 with one skip connection; about 35 k parameters, ~10 MFLOP per image.
2. **Canonical form** (``canonical``; no parameters, so it holds for corruptions never trained
   on): each image's intensities stretched to [0, 1] (min-max contrast normalisation: undoes faded
   ink, haze offsets, brightness), before the U-Net (it sees normalised inputs) and after it; then
   the ink's centre of mass moved by whole pixels to where the training digits have it (the MNIST
   preprocessing itself centred digits by centre of mass, LeCun et al. 1998: a shifted or badly
   framed digit goes back; a clean one moves by 0 px). The centre is a buffer measured on the
   training images at fit time, so the rule is the dataset's, not a constant.
3. **Alignment search** (``align_angles`` non-empty, and only once :meth:`FilterNet.attach_aligner`
   gave it the frozen classifier): each input is tried at the identity and at each small rotation,
   and the one the classifier is most certain about (lowest predictive entropy, the identity
   favoured by ``align_margin`` nats) is kept -- test-time search in the spirit of entropy
   minimisation (TENT, Wang et al. 2021), over a transform the pixel-wise restoration cannot undo.
   It costs one batched classifier pass over ``1 + len(align_angles)`` images per input (one more
   with ``recentre_search``: the re-centred image and the un-shifted restoration are then both
   candidates, compared without margin, so a corruption that moves the centre of mass -- haze,
   clutter -- does not force a wrong shift; the rotations are tried on the re-centred one).

Training (:mod:`daic.filters.fit`) runs stages 1-2 (``restore_canonical``); the search has no
parameters and runs at inference (``forward``). Old state dicts (U-Net only) load as a plain U-Net.
"""
from __future__ import annotations

import copy
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from daic.models.networks import _as_nchw

FILTER_ARCH = "filter_unet"
#: where MNIST training digits have their centre of mass (pixel index; measured: 14.0 +- 0.3)
DEFAULT_CENTRE = (14.0, 14.0)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GELU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.GELU())


def stretch(x: torch.Tensor, min_range: float = 0.05) -> torch.Tensor:
    """Per-image min-max contrast normalisation of (N, 1, H, W) to [0, 1]; near-blank images kept."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    ok = span > min_range
    return torch.where(ok, (x - lo) / torch.where(ok, span, torch.ones_like(span)), x)


def centre_of_mass(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) of each (N, 1, H, W) image's ink (intensity above the image's median), NaN if none."""
    n, _, h, w = x.shape
    flat = x.reshape(n, -1)
    ink = torch.clamp(flat - flat.median(dim=1, keepdim=True).values, min=0).reshape(n, h, w)
    mass = ink.sum(dim=(1, 2))
    rows = torch.arange(h, dtype=x.dtype, device=x.device)
    cols = torch.arange(w, dtype=x.dtype, device=x.device)
    r = (ink.sum(dim=2) * rows).sum(dim=1) / mass
    c = (ink.sum(dim=1) * cols).sum(dim=1) / mass
    return r, c


def shift_whole_pixels(x: torch.Tensor, dr: torch.Tensor, dc: torch.Tensor) -> torch.Tensor:
    """Move each (N, 1, H, W) image by integer (dr, dc) pixels, zeros shifted in (exact, no blur)."""
    n, _, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h, 1) - dr.view(n, 1, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w) - dc.view(n, 1, 1)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    idx = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).reshape(n, 1, h * w)
    out = torch.gather(x.reshape(n, 1, h * w), 2, idx).reshape(n, 1, h, w)
    return out * inside.unsqueeze(1).to(x.dtype)


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each (N, 1, H, W) image about its centre by ``degrees`` (N,), bilinear, zeros outside."""
    th = torch.deg2rad(degrees.to(x.dtype))
    c, s, z = torch.cos(th), torch.sin(th), torch.zeros_like(th)
    m = torch.stack([torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1)], -2)
    grid = F.affine_grid(m, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


class FilterNet(nn.Module):
    """Input (N, 28, 28) or (N, 1, 28, 28) in [0, 1] -> restored (N, 28, 28) in [0, 1].

    ``canonical`` and ``align_angles`` live in buffers, so a registered state dict says what the
    filter does; :meth:`configure` sets them (the fit does, from its FilterConfig)."""

    def __init__(self, width: int = 16, canonical: bool = False, align_angles: Sequence[float] = (),
                 align_margin: float = 0.5, recentre_search: bool = False) -> None:
        super().__init__()
        self.enc = _block(1, width)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)  # 14x14
        self.mid = _block(2 * width, 2 * width)
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)  # 28x28
        self.dec = _block(2 * width, width)
        self.out = nn.Conv2d(width, 1, 1)
        nn.init.zeros_(self.out.weight)  # starts as the identity
        nn.init.zeros_(self.out.bias)
        self.register_buffer("canonical", torch.tensor(0.0))
        self.register_buffer("recentre_search", torch.tensor(0.0))
        self.register_buffer("centre", torch.tensor(DEFAULT_CENTRE))
        self.register_buffer("align_angles", torch.zeros(0))
        self.register_buffer("align_margin", torch.tensor(0.0))
        # the gate's uncertainty part (daic.filters.gate): the wrapped classifier's predictive entropy
        # on the raw input above which an input is filtered; inf: off (set when the gate is calibrated)
        self.register_buffer("gate_entropy", torch.tensor(float("inf")))
        self.configure(canonical=canonical, align_angles=align_angles, align_margin=align_margin,
                       recentre_search=recentre_search)
        self._aligner: Optional[list[nn.Module]] = None  # a list: the classifier is no submodule

    def configure(self, *, canonical: bool, align_angles: Sequence[float] = (), align_margin: float = 0.5,
                  centre: Optional[Sequence[float]] = None, recentre_search: bool = False) -> "FilterNet":
        angles = [float(a) for a in align_angles]
        if any(a == 0 or not -90 <= a <= 90 for a in angles):
            raise ValueError(f"align_angles must be non-zero degrees in [-90, 90], got {angles}")
        if align_margin < 0:
            raise ValueError(f"align_margin must be >= 0, got {align_margin}")
        self.canonical.fill_(1.0 if canonical else 0.0)
        self.recentre_search.fill_(1.0 if recentre_search else 0.0)
        self.align_angles = torch.tensor(angles, dtype=torch.float32, device=self.centre.device)
        self.align_margin.fill_(float(align_margin))
        if centre is not None:
            self.centre.copy_(torch.tensor([float(centre[0]), float(centre[1])]))
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001 - torch's hook
        # A U-Net-only state dict (filters registered before the canonical form): a plain U-Net.
        defaults = {"canonical": torch.tensor(0.0), "recentre_search": torch.tensor(0.0),
                    "centre": torch.tensor(DEFAULT_CENTRE),
                    "align_angles": torch.zeros(0), "align_margin": torch.tensor(0.0),
                    "gate_entropy": torch.tensor(float("inf"))}
        for name, value in defaults.items():
            state_dict.setdefault(prefix + name, value)
        self.align_angles = torch.zeros_like(state_dict[prefix + "align_angles"])  # its length follows the dict
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def searches(self) -> bool:
        return self.align_angles.numel() > 0 or (bool(self.canonical) and bool(self.recentre_search))

    def attach_aligner(self, classifier: nn.Module) -> "FilterNet":
        """Give the alignment search the frozen classifier it scores candidates with (eval mode).

        The search keeps its own copy in ``channels_last`` memory format: on CPU, max-pooling an
        NCHW batch is the slowest kernel of a small CNN (measured: 0.48 ms for 8 x 16 x 28 x 28
        against 0.05 ms channels-last), and the whole 9-candidate pass drops from 1.2 to 0.65 ms
        per input (1.6x on batches of 8,192) with logits equal to 1e-6. A copy, so the caller's
        network keeps its layout."""
        aligner = copy.deepcopy(classifier).eval().to(memory_format=torch.channels_last)
        for p in aligner.parameters():
            p.requires_grad_(False)
        self._aligner = [aligner]
        return self

    def _log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """The aligner's log-probabilities on (N, 1, H, W) inputs (float32, no gradient)."""
        with torch.no_grad():
            logits = self._aligner[0](x.contiguous(memory_format=torch.channels_last))
        return torch.log_softmax(logits.float(), dim=1)

    def entropy(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """The wrapped classifier's predictive entropy (nats) on raw inputs (N, 28, 28) or (N, 1, 28, 28);
        None without an attached classifier."""
        if self._aligner is None:
            return None
        logp = self._log_probs(_as_nchw(x))
        return -(logp.exp() * logp).sum(dim=1)

    def uncertain(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """Boolean (N,): inputs the wrapped classifier is uncertain about (entropy above
        ``gate_entropy``); None when the gate has no uncertainty part (no classifier, or off)."""
        if not self._gates_on_uncertainty:
            return None
        return self.entropy(x) > self.gate_entropy

    @property
    def _gates_on_uncertainty(self) -> bool:
        return bool(torch.isfinite(self.gate_entropy)) and self._aligner is not None

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        """The U-Net's correction, (N, 1, H, W) -> (N, 1, H, W) in [0, 1]."""
        e = self.enc(x)
        m = self.mid(F.gelu(self.down(e)))
        d = self.dec(torch.cat([e, self.up(m)], dim=1))
        return torch.clamp(x + self.out(d), 0.0, 1.0)

    def recentre(self, x: torch.Tensor, max_shift: int = 8) -> torch.Tensor:
        r, c = centre_of_mass(x.detach())
        dr = torch.nan_to_num(torch.round(self.centre[0] - r), nan=0.0).clamp(-max_shift, max_shift).long()
        dc = torch.nan_to_num(torch.round(self.centre[1] - c), nan=0.0).clamp(-max_shift, max_shift).long()
        return shift_whole_pixels(x, dr, dc)

    def restore_canonical(self, x: torch.Tensor) -> torch.Tensor:
        """Stages 1-2 on (N, 1, H, W): what training fits."""
        if bool(self.canonical):
            return self.recentre(stretch(self.restore(stretch(x))))
        return self.restore(x)

    def _candidates(self, x: torch.Tensor, unshifted: Optional[torch.Tensor]) -> tuple[torch.Tensor, int]:
        """(N, K, 1, H, W) candidates of stage 3 and how many lead without margin (see :meth:`align`)."""
        n, r = len(x), self.align_angles.numel()
        angles = torch.cat([torch.zeros(1, device=x.device), self.align_angles.to(x.device)])
        candidates = rotate(x.repeat_interleave(1 + r, dim=0), angles.repeat(n)).view(n, 1 + r, *x.shape[1:])
        candidates[:, 0] = x  # the identity exactly (no resampling)
        if unshifted is None:
            return candidates, 1
        return torch.cat([unshifted.unsqueeze(1), candidates], dim=1), 2

    def _choose(self, candidates: torch.Tensor, plain: int, logp: torch.Tensor) -> torch.Tensor:
        """Per input, the candidate of lowest entropy, ``align_margin`` against all but the first ``plain``."""
        n, k = candidates.shape[:2]
        logp = logp.view(n, k, -1)
        entropy = -(logp.exp() * logp).sum(dim=2)
        entropy[:, plain:] += self.align_margin
        return candidates[torch.arange(n, device=candidates.device), entropy.argmin(dim=1)]

    def align(self, x: torch.Tensor, unshifted: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Stage 3 on (N, 1, H, W): per input, the candidate of lowest classifier entropy among ``x``
        and its rotations (``align_margin`` nats against them) and, when given, ``unshifted`` (``x``
        before re-centring, no margin either way: re-centring is then a candidate, not forced)."""
        if not self.searches or self._aligner is None or len(x) == 0:
            return x
        candidates, plain = self._candidates(x, unshifted)
        return self._choose(candidates, plain, self._log_probs(candidates.flatten(0, 1)))

    def _stages(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Stages 1-2 on (N, 1, H, W), and the un-shifted restoration when re-centring is searched."""
        if bool(self.canonical) and bool(self.recentre_search) and self._aligner is not None:
            restored = stretch(self.restore(stretch(x)))
            return self.recentre(restored), restored
        return self.restore_canonical(x), None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_nchw(x)
        return self.align(*self._stages(x)).squeeze(1)

    def forward_gated(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(forward(x), uncertain(x))`` with the raw inputs scored in the alignment search's
        classifier pass (one batched pass instead of two: the serving path's cost, issue 21)."""
        x = _as_nchw(x)
        if not self._gates_on_uncertainty:
            return self.forward(x), None
        staged, unshifted = self._stages(x)
        if not self.searches or len(x) == 0:
            return staged.squeeze(1), self.uncertain(x)
        candidates, plain = self._candidates(staged, unshifted)
        n = len(x)
        logp = self._log_probs(torch.cat([x, candidates.flatten(0, 1)]))
        raw = logp[:n]
        uncertain = -(raw.exp() * raw).sum(dim=1) > self.gate_entropy
        return self._choose(candidates, plain, logp[n:]).squeeze(1), uncertain


def build_filter(config=None) -> FilterNet:
    """A fresh filter, configured as ``config`` (a FilterConfig) says; None: a plain U-Net."""
    net = FilterNet()
    if config is not None:
        net.configure(canonical=config.canonical, align_angles=config.align_angles, align_margin=config.align_margin,
                      recentre_search=config.recentre == "search")
    return net
