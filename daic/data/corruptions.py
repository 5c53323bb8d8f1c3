"""Image corruptions at five severities, in the spirit of MNIST-C (Mu & Gilmer, 2019).

They model the operational shifts a deployed digit classifier meets (sensor noise, blur, badly
framed or skewed digits, faded ink, scribbles and stains); the scenarios in
:mod:`daic.data.scenarios` mix them into streams so the online and offline assessment can be
checked against known truth. MNIST-C ships fixed corrupted copies of the test set at a single
severity; here each corruption is a function with five severities (the graded style of
ImageNet-C, Hendrycks & Dietterich, 2019), so drift can grow over time. Parameters are our own,
chosen so that severity 1 leaves digits easy to read and severity 5 clearly damages them; the
tests check that the effect grows with severity.

Every corruption works on a whole batch at once (numpy / scipy.ndimage, no Python loop over
images), is deterministic for a given ``seed`` and batch, and returns float32 in [0, 1] with the
input's shape. Randomness is drawn per batch: corrupting a sub-batch gives different noise from
slicing a corrupted batch, so callers that need per-input reproducibility keep batches fixed (the
scenarios do).
"""
from __future__ import annotations

import math
import zlib
from statistics import NormalDist
from typing import Callable

import numpy as np
from scipy import ndimage

IDENTITY = "identity"
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

_Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
_REGISTRY: dict[str, _Corruption] = {}


def _register(name: str) -> Callable[[_Corruption], _Corruption]:
    def wrap(fn: _Corruption) -> _Corruption:
        _REGISTRY[name] = fn
        return fn

    return wrap


def _param(values: tuple, severity: int):
    return values[severity - 1]


# --- sampling helpers -------------------------------------------------------------------------

def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32),
                             indexing="ij")
    return rows, cols


def _sample_bilinear(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear lookup of ``images`` (N, H, W) at per-image source coordinates (N, H, W).

    Outside the image reads as 0 (black background). One flat ``take`` per corner keeps it a few
    vectorised passes over the batch rather than a scipy call per image.
    """
    n, h, w = images.shape
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    flat = padded.reshape(-1)
    r0 = np.floor(rows)
    c0 = np.floor(cols)
    fr = (rows - r0).astype(np.float32)
    fc = (cols - c0).astype(np.float32)
    r0 = np.clip(r0, -1, h).astype(np.intp) + 1
    c0 = np.clip(c0, -1, w).astype(np.intp) + 1
    r1 = np.minimum(r0 + 1, h + 1)
    c1 = np.minimum(c0 + 1, w + 1)
    # Coordinates far below the image clip to the border row of zeros: r0 = r1 = 0 reads 0.
    r1 = np.where(rows < -1, 0, r1)
    c1 = np.where(cols < -1, 0, c1)
    base = (np.arange(n, dtype=np.intp) * ((h + 2) * (w + 2)))[:, None, None]
    stride = w + 2
    top = flat.take(base + r0 * stride + c0) * (1 - fc) + flat.take(base + r0 * stride + c1) * fc
    bottom = flat.take(base + r1 * stride + c0) * (1 - fc) + flat.take(base + r1 * stride + c1) * fc
    return (top * (1 - fr) + bottom * fr).astype(np.float32)


def _sample_nearest(images: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                    edge: str = "zero") -> np.ndarray:
    """Integer lookup; ``edge`` "zero" reads 0 outside, "clamp" repeats the border pixel."""
    n, h, w = images.shape
    rows = np.asarray(rows, dtype=np.intp)
    cols = np.asarray(cols, dtype=np.intp)
    base = (np.arange(n, dtype=np.intp) * (h * w))[:, None, None]
    rc = np.clip(rows, 0, h - 1)
    cc = np.clip(cols, 0, w - 1)
    out = images.reshape(-1).take(base + rc * w + cc)
    if edge == "zero":
        inside = (rows == rc) & (cols == cc)
        out = np.where(inside, out, 0)
    return out.astype(np.float32)


def _affine(images: np.ndarray, matrices: np.ndarray, shifts: np.ndarray | None = None) -> np.ndarray:
    """Per-image affine warp about the image centre.

    ``matrices`` (N, 2, 2) maps an output pixel's offset from the centre to the source offset;
    ``shifts`` (N, 2) adds a source offset in pixels.
    """
    n, h, w = images.shape
    rows, cols = _grid(h, w)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    dr, dc = rows - cy, cols - cx
    m = matrices.astype(np.float32)
    src_r = m[:, 0, 0, None, None] * dr + m[:, 0, 1, None, None] * dc + cy
    src_c = m[:, 1, 0, None, None] * dr + m[:, 1, 1, None, None] * dc + cx
    if shifts is not None:
        src_r = src_r + shifts[:, 0, None, None].astype(np.float32)
        src_c = src_c + shifts[:, 1, None, None].astype(np.float32)
    return _sample_bilinear(images, src_r, src_c)


def _random_signs(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(np.array([-1.0, 1.0]), size=n)


def _jittered(rng: np.random.Generator, n: int, centre: float, jitter: float) -> np.ndarray:
    """Magnitudes uniform in centre +/- jitter: bands that do not overlap across severities."""
    return rng.uniform(centre - jitter, centre + jitter, size=n)


def _draw_points(out: np.ndarray, img: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                 value: float | np.ndarray) -> None:
    """Set pixels (img[k], rows[k], cols[k]) to ``value`` in place, dropping those outside."""
    _, h, w = out.shape
    r = np.rint(rows).astype(np.intp)
    c = np.rint(cols).astype(np.intp)
    keep = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    vals = np.broadcast_to(value, r.shape)[keep]
    out[img[keep], r[keep], c[keep]] = vals


def _draw_segments(out: np.ndarray, img: np.ndarray, r0: np.ndarray, c0: np.ndarray,
                   r1: np.ndarray, c1: np.ndarray, value: float, dash: float | None = None) -> None:
    """Rasterise S straight segments (arrays of shape (S,)) into images ``img`` (S,).

    Sampled at half-pixel steps along the longest segment; with ``dash`` only alternate pieces of
    that length are drawn (a dotted line).
    """
    if img.size == 0:
        return
    length = np.hypot(r1 - r0, c1 - c0)
    steps = int(math.ceil(float(length.max()) * 2)) + 2
    t = np.linspace(0.0, 1.0, steps)[None, :]
    rows = r0[:, None] + t * (r1 - r0)[:, None]
    cols = c0[:, None] + t * (c1 - c0)[:, None]
    idx = np.broadcast_to(img[:, None], rows.shape)
    if dash is not None:
        arc = t * length[:, None]
        on = (np.floor(arc / dash) % 2) == 0
        rows, cols, idx = rows[on], cols[on], idx[on]
    _draw_points(out, idx.reshape(-1), rows.reshape(-1), cols.reshape(-1), value)


def _lines_through_image(rng: np.random.Generator, n_lines: int, h: int, w: int):
    """Endpoints of random full-width lines: a random angle through a point near the centre."""
    theta = rng.uniform(0, np.pi, size=n_lines)
    pr = rng.uniform(0.2 * h, 0.8 * h, size=n_lines)
    pc = rng.uniform(0.2 * w, 0.8 * w, size=n_lines)
    half = float(max(h, w))
    dr, dc = np.sin(theta) * half, np.cos(theta) * half
    return pr - dr, pc - dc, pr + dr, pc + dc


def _box_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) area-averaging matrix: each output bin averages the input pixels it covers."""
    edges = np.linspace(0, n_in, n_out + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    px = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, px + 1) - np.maximum(lo, px), 0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation matrix: upsampling becomes two small matmuls."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    mat = np.zeros((n_out, n_in), dtype=np.float32)
    mat[np.arange(n_out), lo] += 1 - frac
    mat[np.arange(n_out), hi] += frac
    return mat


def _gauss_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) Gaussian smoothing matrix with zero padding, for wide kernels where a matmul beats
    ``ndimage.gaussian_filter``."""
    d = np.arange(n)[:, None] - np.arange(n)[None, :]
    k = np.exp(-0.5 * (d / sigma) ** 2)
    return (k / k.sum(axis=1, keepdims=True).max()).astype(np.float32)


def _fractal_noise(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """Smooth cloud-like noise in [0, 1]: octaves of upsampled random grids, halving amplitude.

    A vectorised stand-in for the diamond-square plasma fractal ImageNet-C uses for fog.
    """
    total = np.zeros((n, h, w), dtype=np.float32)
    amp = 1.0
    for cells in (3, 5, 9, 15):
        coarse = rng.random((n, cells, cells), dtype=np.float32)
        up_r, up_c = _interp_matrix(cells, h), _interp_matrix(cells, w)
        total += np.float32(amp) * np.matmul(np.matmul(up_r, coarse), up_c.T)
        amp *= 0.5
    lo = total.min(axis=(1, 2), keepdims=True)
    hi = total.max(axis=(1, 2), keepdims=True)
    return (total - lo) / np.maximum(hi - lo, 1e-6)


def _blur(images: np.ndarray, sigma: float) -> np.ndarray:
    # sigma 0 on the batch axis: never mix images.
    return ndimage.gaussian_filter(images, sigma=(0, sigma, sigma), mode="constant")


# --- noise ------------------------------------------------------------------------------------

@_register("gaussian_noise")
def _gaussian_noise(x, severity, rng):
    sigma = _param((0.08, 0.14, 0.2, 0.28, 0.38), severity)
    return x + rng.normal(0.0, sigma, size=x.shape).astype(np.float32)


@_register("shot_noise")
def _shot_noise(x, severity, rng):
    """Photon (Poisson) noise: fewer photons per unit of brightness at higher severity."""
    photons = _param((40, 20, 10, 5, 2.5), severity)
    return rng.poisson(x * photons).astype(np.float32) / np.float32(photons)


@_register("impulse_noise")
def _impulse_noise(x, severity, rng):
    """Salt-and-pepper noise: a share of pixels set to black or white."""
    amount = _param((0.03, 0.07, 0.12, 0.18, 0.27), severity)
    u = rng.random(x.shape, dtype=np.float32)
    out = x.copy()
    out[u < amount / 2] = 0.0
    out[(u >= amount / 2) & (u < amount)] = 1.0
    return out


# --- blur -------------------------------------------------------------------------------------

@_register("gaussian_blur")
def _gaussian_blur(x, severity, rng):
    return _blur(x, _param((0.6, 0.9, 1.2, 1.6, 2.1), severity))


@_register("glass_blur")
def _glass_blur(x, severity, rng):
    """Blur, jitter every pixel by a few random pixels (frosted glass), blur again."""
    sigma, delta, iterations = _param(
        ((0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.8, 2, 2), (0.9, 3, 2)), severity)
    n, h, w = x.shape
    rows, cols = _grid(h, w)
    out = _blur(x, sigma)
    for _ in range(iterations):
        dr = rng.integers(-delta, delta + 1, size=x.shape)
        dc = rng.integers(-delta, delta + 1, size=x.shape)
        out = _sample_nearest(out, rows + dr, cols + dc, edge="clamp")
    return _blur(out, sigma)


def _line_kernel(half: float, theta: float) -> np.ndarray:
    """Normalised (1, k, k) kernel of a centred line segment of half-length ``half`` at ``theta``,
    drawn with bilinear weights so short and oblique lines stay smooth."""
    size = 2 * int(math.ceil(half)) + 3
    c = size // 2
    kern = np.zeros((size, size), dtype=np.float64)
    for t in np.linspace(-half, half, 4 * int(math.ceil(half)) + 1):
        r, q = c + t * math.sin(theta), c + t * math.cos(theta)
        r0, q0 = int(math.floor(r)), int(math.floor(q))
        fr, fq = r - r0, q - q0
        kern[r0, q0] += (1 - fr) * (1 - fq)
        kern[r0 + 1, q0] += fr * (1 - fq)
        kern[r0, q0 + 1] += (1 - fr) * fq
        kern[r0 + 1, q0 + 1] += fr * fq
    return (kern / kern.sum()).astype(np.float32)[None]


_MOTION_DIRECTIONS = 24


@_register("motion_blur")
def _motion_blur(x, severity, rng):
    """Smear along a random direction per image (camera or hand motion).

    Directions are drawn from 24 evenly spaced angles so images sharing one are convolved together:
    24 convolutions of sub-batches instead of one per image.
    """
    half = _param((1.0, 1.5, 2.0, 2.75, 3.5), severity)
    direction = rng.integers(0, _MOTION_DIRECTIONS, size=x.shape[0])
    out = np.empty_like(x)
    for d in np.unique(direction):
        members = direction == d
        kern = _line_kernel(half, np.pi * d / _MOTION_DIRECTIONS)
        out[members] = ndimage.convolve(x[members], kern, mode="constant")
    return out


@_register("pixelate")
def _pixelate(x, severity, rng):
    """Area-downsample to a coarse grid and blow back up with square blocks."""
    cells = _param((14, 12, 10, 8, 6), severity)
    n, h, w = x.shape
    down_r, down_c = _box_matrix(h, cells), _box_matrix(w, cells)
    small = np.matmul(np.matmul(down_r, x), down_c.T)
    up_r = (np.arange(h) * cells) // h
    up_c = (np.arange(w) * cells) // w
    return small[:, up_r][:, :, up_c]


# --- geometry ---------------------------------------------------------------------------------

@_register("shear")
def _shear(x, severity, rng):
    k = _jittered(rng, x.shape[0], _param((0.2, 0.32, 0.44, 0.56, 0.7), severity), 0.05)
    k *= _random_signs(rng, x.shape[0])
    m = np.zeros((x.shape[0], 2, 2))
    m[:, 0, 0] = 1.0
    m[:, 1, 1] = 1.0
    m[:, 1, 0] = k  # source column = column + k * row offset: a horizontal shear
    return _affine(x, m)


@_register("scale")
def _scale(x, severity, rng):
    """Shrink or enlarge about the centre by exp(+/- m), m growing with severity."""
    n = x.shape[0]
    m = _jittered(rng, n, _param((0.2, 0.3, 0.4, 0.52, 0.65), severity), 0.04)
    factor = np.exp(m * _random_signs(rng, n))
    mats = np.zeros((n, 2, 2))
    mats[:, 0, 0] = 1.0 / factor
    mats[:, 1, 1] = 1.0 / factor
    return _affine(x, mats)


@_register("rotate")
def _rotate(x, severity, rng):
    n = x.shape[0]
    deg = _jittered(rng, n, _param((12, 22, 32, 44, 58), severity), 4)
    theta = np.deg2rad(deg * _random_signs(rng, n))
    c, s = np.cos(theta), np.sin(theta)
    mats = np.stack([np.stack([c, -s], axis=1), np.stack([s, c], axis=1)], axis=1)
    return _affine(x, mats)


@_register("translate")
def _translate(x, severity, rng):
    """Shift by a whole number of pixels in a random direction (no interpolation blur)."""
    n, h, w = x.shape
    dist = _param((2, 3, 4, 5, 6), severity)
    theta = rng.uniform(0, 2 * np.pi, size=n)
    dr = np.rint(dist * np.sin(theta)).astype(np.intp)
    dc = np.rint(dist * np.cos(theta)).astype(np.intp)
    rows, cols = _grid(h, w)
    return _sample_nearest(x, rows - dr[:, None, None], cols - dc[:, None, None], edge="zero")


@_register("elastic")
def _elastic(x, severity, rng):
    """Elastic distortion (Simard, Steinkraus & Platt, 2003): smoothed random displacement field."""
    alpha = _param((18, 26, 34, 44, 56), severity)
    sigma = 4.0
    n, h, w = x.shape
    field = rng.uniform(-1, 1, size=(2, n, h, w)).astype(np.float32)
    g_r, g_c = _gauss_matrix(h, sigma), _gauss_matrix(w, sigma)
    dr = np.matmul(np.matmul(g_r, field[0]), g_c.T) * np.float32(alpha)
    dc = np.matmul(np.matmul(g_r, field[1]), g_c.T) * np.float32(alpha)
    rows, cols = _grid(h, w)
    return _sample_bilinear(x, rows + dr, cols + dc)


# --- photometric ------------------------------------------------------------------------------

@_register("brightness")
def _brightness(x, severity, rng):
    return x + np.float32(_param((0.12, 0.22, 0.32, 0.42, 0.52), severity))


@_register("contrast")
def _contrast(x, severity, rng):
    """Low contrast: pull every pixel towards the image mean (faded ink)."""
    c = np.float32(_param((0.5, 0.36, 0.25, 0.16, 0.09), severity))
    mean = x.mean(axis=(1, 2), keepdims=True)
    return (x - mean) * c + mean


@_register("fog")
def _fog(x, severity, rng):
    """Add cloud-like haze and renormalise, which also lowers contrast (ImageNet-C style)."""
    a = np.float32(_param((0.4, 0.65, 0.9, 1.25, 1.7), severity))
    haze = _fractal_noise(rng, *x.shape)
    return (x + a * haze) / (1 + a)


@_register("edges")
def _edges(x, severity, rng):
    """Blend towards the Sobel gradient magnitude: strokes become outlines (cf. MNIST-C canny_edges)."""
    alpha = np.float32(_param((0.3, 0.45, 0.6, 0.8, 1.0), severity))
    kr = np.array([[[-1, -2, -1], [0, 0, 0], [1, 2, 1]]], dtype=np.float32)
    smooth = _blur(x, 0.5)
    gr = ndimage.correlate(smooth, kr, mode="constant")
    gc = ndimage.correlate(smooth, kr.transpose(0, 2, 1), mode="constant")
    mag = np.hypot(gr, gc)
    mag /= np.maximum(mag.max(axis=(1, 2), keepdims=True), 1e-6)
    return (1 - alpha) * x + alpha * mag


# --- occlusion and scribbles ------------------------------------------------------------------

@_register("spatter")
def _spatter(x, severity, rng):
    """Blotches (thresholded smooth noise) of a random grey that cover background and strokes."""
    coverage = _param((0.04, 0.07, 0.1, 0.14, 0.19), severity)
    n = x.shape[0]
    noise = _blur(rng.standard_normal(x.shape, dtype=np.float32), 1.6)
    noise /= np.maximum(noise.std(axis=(1, 2), keepdims=True), 1e-6)
    mask = noise > NormalDist().inv_cdf(1 - coverage)
    shade = rng.uniform(0.45, 0.95, size=(n, 1, 1)).astype(np.float32)
    return np.where(mask, shade, x)


@_register("stripe")
def _stripe(x, severity, rng):
    """Invert a band of pixels, vertical or horizontal, its width growing with severity."""
    width = _param((2, 3, 4, 5, 7), severity)
    n, h, w = x.shape
    vertical = rng.random(n) < 0.5
    start = rng.integers(4, min(h, w) - 4 - width + 1, size=n)
    rows, cols = _grid(h, w)
    pos = np.where(vertical[:, None, None], cols[None], rows[None])
    band = (pos >= start[:, None, None]) & (pos < (start + width)[:, None, None])
    return np.where(band, 1 - x, x)


@_register("dotted_line")
def _dotted_line(x, severity, rng):
    """Dotted lines across the image, more of them at higher severity."""
    per_image = _param((1, 2, 3, 4, 6), severity)
    n, h, w = x.shape
    img = np.repeat(np.arange(n), per_image)
    r0, c0, r1, c1 = _lines_through_image(rng, img.size, h, w)
    out = x.copy()
    _draw_segments(out, img, r0, c0, r1, c1, value=1.0, dash=1.5)
    return out


@_register("zigzag")
def _zigzag(x, severity, rng):
    """Zigzag strokes across the image, more of them at higher severity."""
    per_image = _param((1, 2, 3, 4, 5), severity)
    n, h, w = x.shape
    img = np.repeat(np.arange(n), per_image)
    k = img.size
    legs = 5
    theta = rng.uniform(0, np.pi, size=k)
    pr = rng.uniform(0.25 * h, 0.75 * h, size=k)
    pc = rng.uniform(0.25 * w, 0.75 * w, size=k)
    amp = rng.uniform(1.5, 3.0, size=k)
    along = np.linspace(-0.35 * w, 0.35 * w, legs + 1)[None, :]
    across = amp[:, None] * np.where(np.arange(legs + 1) % 2 == 0, 1.0, -1.0)[None, :]
    st, ct = np.sin(theta)[:, None], np.cos(theta)[:, None]
    vr = pr[:, None] + along * st + across * ct
    vc = pc[:, None] + along * ct - across * st
    out = x.copy()
    seg_img = np.repeat(img, legs)
    _draw_segments(out, seg_img, vr[:, :-1].ravel(), vc[:, :-1].ravel(), vr[:, 1:].ravel(),
                   vc[:, 1:].ravel(), value=1.0)
    return out


CORRUPTIONS: tuple[str, ...] = tuple(_REGISTRY)
"""Names of the real corruptions (``"identity"`` is accepted by :func:`corrupt` but not listed)."""


def _check_images(images) -> tuple[np.ndarray, bool]:
    arr = np.asarray(images)
    if arr.ndim not in (2, 3):
        raise ValueError(f"images must have shape (N, H, W) or (H, W), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(
            f"images must be floats in [0, 1], got dtype {arr.dtype} "
            "(divide uint8 images by 255 first)"
        )
    single = arr.ndim == 2
    arr = np.array(arr[None] if single else arr, dtype=np.float32, copy=True)
    if arr.size:
        lo, hi = float(arr.min()), float(arr.max())
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -1e-6 or hi > 1 + 1e-6:
            raise ValueError(f"images must be finite and in [0, 1], got range [{lo}, {hi}]")
        np.clip(arr, 0.0, 1.0, out=arr)
    return arr, single


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` (1..5) to a batch (N, H, W) or one image (H, W).

    Returns a new float32 array in [0, 1] with the input's shape; the input is never modified.
    ``"identity"`` returns a copy at any severity. The same (images, name, severity, seed) always
    gives the same output; each (name, severity) draws from its own random stream.
    """
    if name != IDENTITY and name not in _REGISTRY:
        raise ValueError(
            f"unknown corruption {name!r}; valid: {', '.join((IDENTITY,) + CORRUPTIONS)}"
        )
    if name != IDENTITY and (
        isinstance(severity, bool) or not isinstance(severity, (int, np.integer))
        or severity not in SEVERITIES
    ):
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    seed = _check_seed(seed)
    arr, single = _check_images(images)
    if name == IDENTITY or arr.shape[0] == 0:
        return arr[0] if single else arr
    rng = np.random.default_rng([seed, zlib.crc32(name.encode()), int(severity)])
    out = _REGISTRY[name](arr, int(severity), rng)
    out = np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)
    return out[0] if single else out
