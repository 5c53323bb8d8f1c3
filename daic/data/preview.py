"""Looking at corruptions: ASCII art for a terminal and a PNG grid (corruptions x severities).

People judge a corruption suite by eye first (is the digit still readable at severity 1, clearly
damaged at 5?); these renderings make that check one command away.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from daic.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt

_RAMP = " .:-=+*#%@"


def ascii_art(image: np.ndarray, width: int = 28) -> list[str]:
    """Render one (H, W) image in [0, 1] as text lines, two pixel rows per line (terminal cells
    are about twice as tall as wide)."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"image must have shape (H, W), got {img.shape}")
    h, w = img.shape
    rows = np.arange(0, h - h % 2, 2)
    cols = (np.arange(width) * w) // width
    cells = (img[rows][:, cols] + img[rows + 1][:, cols]) / 2 if h > 1 else img[:, cols]
    levels = np.clip((cells * len(_RAMP)).astype(int), 0, len(_RAMP) - 1)
    return ["".join(_RAMP[v] for v in row) for row in levels]


def ascii_row(images: np.ndarray, gap: str = "  ") -> list[str]:
    """Several images side by side as text lines."""
    blocks = [ascii_art(img) for img in images]
    return [gap.join(parts) for parts in zip(*blocks)]


def corruption_grid(images: np.ndarray, names: tuple[str, ...] = CORRUPTIONS,
                    seed: int = 0) -> np.ndarray:
    """Array (len(names), K, 6, H, W) for K images: clean, then severities 1..5.

    The K images are corrupted as one batch, so each gets its own random draw.
    """
    images = np.asarray(images, dtype=np.float32)
    rows = []
    for name in names:
        cells = [images] + [corrupt(images, name, s, seed) for s in SEVERITIES]
        rows.append(np.stack(cells, axis=1))
    return np.stack(rows)


def mosaic(grid: np.ndarray, gap: int = 2) -> np.ndarray:
    """Tile a (C, K, S, H, W) grid into one 2-D image: C*K rows of S cells, ``gap`` pixels apart
    (the gap reads as mid-grey so black backgrounds stay distinguishable)."""
    c, k, s, h, w = grid.shape
    out = np.full((c * k * (h + gap) - gap, s * (w + gap) - gap), 0.5, dtype=np.float32)
    for row in range(c * k):
        for col in range(s):
            r0, c0 = row * (h + gap), col * (w + gap)
            out[r0:r0 + h, c0:c0 + w] = grid[row // k, row % k, col]
    return out


def save_corruption_png(images: np.ndarray, out: str | Path, names: tuple[str, ...] = CORRUPTIONS,
                        seed: int = 0) -> Path:
    """Write a PNG grid: one block of rows per corruption, columns clean + severities 1..5.

    ``images`` (K, H, W): each corruption gets K rows, one per example image. Drawn as a single
    mosaic image (one imshow), which is much faster than a subplot per cell.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 2:
        images = images[None]
    grid = corruption_grid(images, names, seed)  # (C, K, 6, H, W)
    c, k, s, h, w = grid.shape
    gap = 2
    tiles = mosaic(grid, gap)
    scale = 0.035  # inches per pixel
    fig_w, fig_h = tiles.shape[1] * scale + 1.6, tiles.shape[0] * scale + 0.4
    fig = plt.figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((1.5 / fig_w, 0.05 / fig_h, tiles.shape[1] * scale / fig_w,
                       tiles.shape[0] * scale / fig_h))
    ax.imshow(tiles, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([(w + gap) * i + w / 2 for i in range(s)])
    ax.set_xticklabels(["clean"] + [f"sev {sev}" for sev in SEVERITIES], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks([(h + gap) * (i * k) + (k * (h + gap) - gap) / 2 for i in range(c)])
    ax.set_yticklabels(list(names), fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
