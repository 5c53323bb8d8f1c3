"""Corruption-robust retraining: a broad family of generic image operations applied on the fly.

A cycle retrains after the traffic drifted, but nothing tells the trainer *how* it drifted beyond a
few hundred labelled examples. Training the challenger on base images distorted by a broad, fixed
family of generic operations (AugMix, Hendrycks et al. 2020: random chains of simple operations,
mixed with Dirichlet weights and blended back with the original) makes it robust to shifts of the
same kinds -- whichever one the traffic took -- without being told which; the labelled drifted
inputs then only have to teach what the family does not cover.

The family (:data:`OPS`) is generic and fixed; it is not derived from the corruptions a cycle sees,
and it deliberately leaves out three kinds of shift so that the benchmark
(``benchmarks/improvement.py``) can measure on shifts the family does not contain: no smooth
low-frequency additive field (fog), no per-pixel displacement jitter (glass blur), no drawn lines
or strokes (dotted lines):

* geometry (as AugMix, each kind also on its own): rotation (up to 50 degrees), translation (up to
  6 pixels per axis), shear and scale (0.4, 0.7-1.35), a combined random affine map (rotation up
  to 45 degrees, scale 0.75-1.3, shear up to 0.3, shift up to 5 pixels) and an elastic distortion
  (Simard et al. 2003: a smooth random field);
* intensity: contrast (pull towards the mean, factor 0.1-1), gamma (0.4-2.5), brightness offset;
* noise: Gaussian (sigma up to 0.4) and salt-and-pepper (up to 15 % of pixels);
* resolution: Gaussian blur (sigma 0.5-1.6) and pixelation (down to 9-16 pixels and back);
* occlusion: a random erased rectangle (Cutout, DeVries & Taylor 2017).

``augment="augmix"`` mixes ``width`` chains of 1-3 operations (Dirichlet(1) weights) and blends
the result with the original (Beta(1, 1)), as AugMix; ``"chain"`` applies one chain unmixed (harsher
distortions). ``"chain"`` is the retrain default: on the demo's mixture, full base split, 2 epochs,
140 training labels, it regained 0.75 of the drop against AugMix's 0.55 and 0.40 without either
(docs/benchmarks/improvement.md) -- blending with the original softens the strong shifts a
drifted stream shows. Its cost: a shift outside the family can get worse (glass_blur/4, full base:
0.35 regained without augmentation, 0.16 with it; docs/benchmarks/improvement.md). In a training batch a share ``augment_share`` of the base examples is distorted (the
rest stays clean, which keeps the clean accuracy), and the labelled operational examples get a weak
view (shift up to 2 pixels, rotation up to 10 degrees) so that repeating them many times per epoch
does not memorise their pixels. Everything runs on the training device, per batch, seeded by the
caller's generator.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch.nn import functional as F

Op = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _u(n: int, low: float, high: float, gen: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, device=device)


def _sign(n: int, gen: torch.Generator, device) -> torch.Tensor:
    return torch.randint(0, 2, (n,), generator=gen, device=device).float() * 2 - 1


def _affine_grid(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def affine(x: torch.Tensor, gen: torch.Generator, max_deg: float = 45.0, scale: tuple[float, float] = (0.75, 1.3),
           max_shear: float = 0.3, max_shift: float = 5.0) -> torch.Tensor:
    """Rotation, scale, shear and shift about the centre (zero fill)."""
    n, dev, size = x.shape[0], x.device, x.shape[-1]
    a = _u(n, -math.radians(max_deg), math.radians(max_deg), gen, dev)
    s = torch.exp(_u(n, math.log(scale[0]), math.log(scale[1]), gen, dev))
    sh = _u(n, -max_shear, max_shear, gen, dev)
    tx, ty = (_u(n, -max_shift, max_shift, gen, dev) * 2 / size for _ in range(2))
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    theta = torch.stack([torch.stack([cos, -sin + sh * cos, tx], 1), torch.stack([sin, cos + sh * sin, ty], 1)], 1)
    return _affine_grid(x, theta)


def rotate(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rotation alone, up to 50 degrees either way."""
    return affine(x, gen, max_deg=50.0, scale=(1.0, 1.0), max_shear=0.0, max_shift=0.0)


def translate(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shift alone, up to 6 pixels along each axis."""
    return affine(x, gen, max_deg=0.0, scale=(1.0, 1.0), max_shear=0.0, max_shift=6.0)


def shear_scale(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shear (up to 0.4) and scale (0.7-1.35) alone."""
    return affine(x, gen, max_deg=0.0, scale=(0.7, 1.35), max_shear=0.4, max_shift=0.0)


def weak_affine(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The labelled examples' view: rotation up to 10 degrees, shift up to 2 pixels."""
    return affine(x, gen, max_deg=10.0, scale=(0.95, 1.05), max_shear=0.0, max_shift=2.0)


def elastic(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A smooth random displacement field (a 4x4 grid of offsets up to ~3 pixels, upsampled)."""
    n, dev, size = x.shape[0], x.device, x.shape[-1]
    alpha = _u(n, 0.5, 3.0, gen, dev).view(n, 1, 1, 1) * 2 / size
    coarse = torch.randn((n, 2, 4, 4), generator=gen, device=dev) * alpha
    field = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    eye = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], device=dev).expand(n, 2, 3)
    grid = F.affine_grid(eye.to(x.dtype), list(x.shape), align_corners=False) + field.to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def contrast(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    c = _u(n, 0.1, 1.0, gen, x.device).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return mean + c * (x - mean)


def gamma(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    g = torch.exp(_u(n, math.log(0.4), math.log(2.5), gen, x.device)).view(n, 1, 1, 1)
    return x.clamp_min(0).pow(g)


def brightness(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    return x + _u(n, -0.3, 0.4, gen, x.device).view(n, 1, 1, 1)


def gaussian_noise(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    sigma = _u(n, 0.03, 0.4, gen, x.device).view(n, 1, 1, 1)
    return x + sigma * torch.randn(x.shape, generator=gen, device=x.device)


def salt_pepper(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    p = _u(n, 0.01, 0.15, gen, x.device).view(n, 1, 1, 1)
    r = torch.rand(x.shape, generator=gen, device=x.device)
    salt = torch.rand(x.shape, generator=gen, device=x.device) < 0.5
    hit = r < p
    return torch.where(hit & salt, torch.ones_like(x), torch.where(hit, torch.zeros_like(x), x))


def blur(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Gaussian blur with a per-image sigma (a separable 7-tap kernel per image, grouped conv)."""
    n, dev = x.shape[0], x.device
    sigma = _u(n, 0.5, 1.6, gen, dev).view(n, 1)
    t = torch.arange(-3, 4, device=dev, dtype=x.dtype).view(1, 7)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum(1, keepdim=True)).to(x.dtype)
    y = x.transpose(0, 1)  # (1, n, H, W): one group per image
    y = F.conv2d(F.pad(y, (3, 3, 0, 0)), k.view(n, 1, 1, 7), groups=n)
    y = F.conv2d(F.pad(y, (0, 0, 3, 3)), k.view(n, 1, 7, 1), groups=n)
    return y.transpose(0, 1)


def pixelate(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Area-downsample to 9-16 pixels a side (one size per call) and back with square blocks."""
    size = x.shape[-1]
    low = int(torch.randint(9, 17, (1,), generator=gen, device=x.device).item())
    return F.interpolate(F.interpolate(x, size=(low, low), mode="area"), size=(size, size), mode="nearest")


def cutout(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Erase a random rectangle of 4-12 pixels a side."""
    n, dev, size = x.shape[0], x.device, x.shape[-1]
    h = torch.randint(4, 13, (n,), generator=gen, device=dev)
    w = torch.randint(4, 13, (n,), generator=gen, device=dev)
    r0 = (torch.rand(n, generator=gen, device=dev) * (size - h + 1)).long()
    c0 = (torch.rand(n, generator=gen, device=dev) * (size - w + 1)).long()
    r = torch.arange(size, device=dev)
    rows = (r.view(1, -1) >= r0.view(-1, 1)) & (r.view(1, -1) < (r0 + h).view(-1, 1))
    cols = (r.view(1, -1) >= c0.view(-1, 1)) & (r.view(1, -1) < (c0 + w).view(-1, 1))
    return x.masked_fill((rows.unsqueeze(2) & cols.unsqueeze(1)).unsqueeze(1), 0.0)


OPS: dict[str, Op] = {
    "rotate": rotate, "translate": translate, "shear_scale": shear_scale, "affine": affine, "elastic": elastic, "contrast": contrast, "gamma": gamma, "brightness": brightness,
    "gaussian_noise": gaussian_noise, "salt_pepper": salt_pepper, "blur": blur, "pixelate": pixelate,
    "cutout": cutout,
}
_OP_LIST = tuple(OPS.values())


def _nchw(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(1) if x.dim() == 3 else x


def chain(x: torch.Tensor, gen: torch.Generator, max_depth: int = 3) -> torch.Tensor:
    """Each image through its own random chain of 1-``max_depth`` operations of :data:`OPS`."""
    x = _nchw(x)
    n, dev = x.shape[0], x.device
    depth = torch.randint(1, max_depth + 1, (n,), generator=gen, device=dev)
    out = x.clone()
    for step in range(max_depth):
        op_of = torch.randint(0, len(_OP_LIST), (n,), generator=gen, device=dev)
        active = depth > step
        for k, op in enumerate(_OP_LIST):
            rows = torch.nonzero(active & (op_of == k)).flatten()
            if rows.numel():
                out[rows] = op(out[rows], gen).clamp(0.0, 1.0)
    return out


def augmix(x: torch.Tensor, gen: torch.Generator, width: int = 3) -> torch.Tensor:
    """AugMix's image: ``width`` chains mixed with Dirichlet(1) weights, blended with the original
    by m ~ Beta(1, 1) (Hendrycks et al. 2020, without the Jensen-Shannon term)."""
    x = _nchw(x)
    n, dev = x.shape[0], x.device
    # Dirichlet(1, ..., 1) = normalised Exp(1) draws; Beta(1, 1) = Uniform(0, 1).
    w = -torch.log(torch.rand((width, n), generator=gen, device=dev).clamp_min(1e-12))
    w = (w / w.sum(0, keepdim=True)).view(width, n, 1, 1, 1)
    mixed = sum(w[i] * chain(x, gen) for i in range(width))
    m = torch.rand(n, generator=gen, device=dev).view(n, 1, 1, 1)
    return ((1 - m) * x + m * mixed).clamp(0.0, 1.0)


MODES = ("off", "chain", "augmix")


def augment_batch(x: torch.Tensor, operational: torch.Tensor, mode: str, share: float,
                  gen: torch.Generator) -> torch.Tensor:
    """One training batch's inputs: a share ``share`` of its base examples distorted by the family
    (``mode`` "chain" or "augmix"), its operational examples (``operational``, a bool mask) given
    the weak view; ``mode="off"`` returns ``x`` unchanged."""
    if mode not in MODES:
        raise ValueError(f"augment must be one of {', '.join(MODES)}, got {mode!r}")
    if not 0 <= share <= 1:
        raise ValueError(f"augment_share must be in [0, 1], got {share!r}")
    if mode == "off":
        return x
    squeeze = x.dim() == 3
    x = _nchw(x)
    if operational.shape != (x.shape[0],):
        raise ValueError(f"operational mask must have shape ({x.shape[0]},), got {tuple(operational.shape)}")
    out = x.clone()
    pick = (~operational) & (torch.rand(x.shape[0], generator=gen, device=x.device) < share)
    rows = torch.nonzero(pick).flatten()
    if rows.numel():
        out[rows] = (augmix if mode == "augmix" else chain)(x[rows].float(), gen).to(x.dtype)
    rows = torch.nonzero(operational).flatten()
    if rows.numel():
        out[rows] = weak_affine(x[rows].float(), gen).clamp(0.0, 1.0).to(x.dtype)
    return out.squeeze(1) if squeeze else out
