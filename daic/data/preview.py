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


def save_corruption_png(images: np.ndarray, out: str | Path, names: tuple[str, ...] = CORRUPTIONS,
                        seed: int = 0) -> Path:
    """Write a PNG grid: one block of rows per corruption, columns clean + severities 1..5.

    ``images`` (K, H, W): each corruption gets K rows, one per example image.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 2:
        images = images[None]
    grid = corruption_grid(images, names, seed)  # (C, K, 6, H, W)
    n_rows, n_cols = len(names) * len(images), 1 + len(SEVERITIES)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(n_cols * 0.9 + 1.4, n_rows * 0.9),
                             squeeze=False)
    for ci, name in enumerate(names):
        for k in range(len(images)):
            r = ci * len(images) + k
            for col in range(n_cols):
                ax = axes[r, col]
                ax.imshow(grid[ci, k, col], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title("clean" if col == 0 else f"sev {col}", fontsize=8)
            if k == 0:
                axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout(pad=0.2)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
