"""The report's figures (matplotlib, Agg backend): each function writes one PNG and returns its name."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .cycles import CycleView  # noqa: E402
from .timeline import Timeline  # noqa: E402

_EVENT_STYLE = {"trigger": ("tab:red", "--"), "retrain": ("tab:purple", ":"),
                "promotion": ("tab:green", "-"), "refusal": ("tab:gray", "-."),
                "assessment": ("tab:orange", ":"), "recalibration": ("tab:cyan", ":"),
                "filter-in": ("tab:olive", "-"), "filter-out": ("tab:olive", "--")}


def accuracy_over_time(timeline: Timeline, cycles: list[CycleView], out: Path) -> str:
    steps = np.array([p.step for p in timeline.points])
    fig, ax = plt.subplots(figsize=(10, 4.2))
    truth = [p.true_accuracy for p in timeline.points]
    if any(t is not None for t in truth):
        ax.plot(steps, [np.nan if t is None else t for t in truth], color="black", lw=1.5, label="true accuracy")
    est = np.array([np.nan if p.estimate is None else p.estimate for p in timeline.points])
    lo = np.array([np.nan if p.lower is None else p.lower for p in timeline.points])
    hi = np.array([np.nan if p.upper is None else p.upper for p in timeline.points])
    ax.plot(steps, est, color="tab:blue", lw=1.5, label="online estimate (pseudo-oracle)")
    ax.fill_between(steps, lo, hi, color="tab:blue", alpha=0.18, label="online band")
    untrusted = [p.step for p in timeline.points if not p.trusted]
    if untrusted:
        ax.scatter(untrusted, [0.02] * len(untrusted), marker="|", color="tab:red", label="estimate untrusted")
    by_cycle = {e.cycle: e.step for e in timeline.events if e.kind == "assessment" and e.cycle}
    for c in cycles:
        acc = c.estimate.get("accuracy") or c.estimate.get("estimate")
        if acc is None or c.cycle not in by_cycle:
            continue
        lower, upper = c.estimate.get("lower", acc), c.estimate.get("upper", acc)
        ax.errorbar([by_cycle[c.cycle]], [acc], yerr=[[acc - lower], [upper - acc]], fmt="D", color="tab:orange",
                    capsize=4, label="offline estimate ± 95% CI")
    seen = set()
    for e in timeline.events:
        if e.kind == "remedy":  # a mark at the top, with the decision (its reason is in the table)
            decision = e.detail.split(":", 1)[0]
            ax.scatter([e.step], [0.985], marker="v", s=60, color="tab:olive", zorder=5,
                       label="remedy decision" if "remedy" not in seen else None)
            ax.annotate(decision, (e.step, 0.985), xytext=(3, -12), textcoords="offset points", fontsize=7,
                        color="tab:olive")
            seen.add("remedy")
            continue
        color, ls = _EVENT_STYLE.get(e.kind, ("gray", ":"))
        ax.axvline(e.step, color=color, ls=ls, lw=1, label=e.kind if e.kind not in seen else None)
        seen.add(e.kind)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("step (one batch of operational traffic)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Operational accuracy — run {timeline.run}" + (f", scenario {timeline.scenario}" if timeline.scenario else ""))
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), loc="lower left", fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    name = "accuracy.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def labels_per_cycle(cycles: list[CycleView], out: Path) -> str | None:
    rows = [(c.cycle, c.labels_used, c.srs_labels) for c in cycles if c.labels_used is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r[1] for r in rows], width=0.4, label="labels used")
    srs = [r[2] if r[2] is not None else np.nan for r in rows]
    ax.bar(x + 0.2, srs, width=0.4, label="random sampling would need (same CI)")
    ax.set_xticks(x, [r[0][-12:] for r in rows], rotation=15, fontsize=8)
    ax.set_ylabel("labels")
    ax.legend(fontsize=8)
    ax.set_title("Labels per cycle")
    fig.tight_layout()
    name = "labels.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def mispredictions_grid(cycles: list[CycleView], out: Path, limit: int = 40) -> str | None:
    imgs, caps = [], []
    for c in cycles:
        if c.mispredicted_inputs is None:
            continue
        for img, t, p in zip(c.mispredicted_inputs, c.mispredicted_truth, c.mispredicted_pred):
            imgs.append(img)
            caps.append(f"true {t} / model {p}")
    if not imgs:
        return None
    imgs, caps = imgs[:limit], caps[:limit]
    cols = min(10, len(imgs))
    rows = int(np.ceil(len(imgs) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, cap in zip(axes.flat, imgs, caps):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(cap, fontsize=7)
    fig.suptitle("Sampled inputs the model got wrong (found by labeling)", fontsize=10)
    fig.tight_layout()
    name = "mispredictions.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name
