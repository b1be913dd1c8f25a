"""A study's figure per dataset: per-epoch accuracy curves beside test accuracy bars."""
import math

import numpy as np

from dualbench.report.plots import pyplot, save_figure
from dualbench.study.analysis import arm_rows, outcomes
from dualbench.common.stats import mean_ci


ARM_COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
              "#1f78b4", "#b15928"]


BACKEND_STYLE = {"torch": "-", "paddle": "--"}


def plot_study(runs, study, plan, path):
    """Per-epoch accuracy curves (val if the task has a split, else train; mean over seeds) for every arm
    and backend, beside test accuracy bars with 95% CIs."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    labels, means, errs, colors, hatches, notes = [], [], [], [], [], []
    for i, arm in enumerate(study.arms):
        rows = arm_rows(runs, study, arm, plan)
        color = ARM_COLORS[i % len(ARM_COLORS)]
        for backend in ("torch", "paddle"):
            mine = rows[rows["backend"] == backend]
            if not len(mine):
                continue
            metric = "val_acc" if mine["val_acc"].notna().any() else "train_acc"
            curve = mine.groupby("epoch")[metric].mean()
            axes[0].plot(curve.index, curve.values, BACKEND_STYLE[backend], color=color, lw=1.4,
                         label=f"{arm.label} ({backend}{', val' if metric == 'val_acc' else ', train'})")
            ok = outcomes(mine)
            acc, lo, hi = mean_ci(ok["test_acc"].dropna())
            labels.append(f"{arm.label}\n{backend}")
            means.append(acc)   # NaN (every seed diverged or failed): no bar, a note instead, never a 0
            errs.append(hi - acc if math.isfinite(hi) else 0.0)
            notes.append("" if len(ok["test_acc"].dropna()) else ", ".join(
                f"{(ok['status'] == s).sum()} {s}" for s in ("diverged", "failed") if (ok["status"] == s).any()))
            colors.append(color)
            hatches.append("" if backend == "torch" else "//")
    dataset = plan.dataset
    axes[0].set(xlabel="epoch", ylabel="accuracy (mean over seeds)",
                title=f"{study.name}: per-epoch accuracy (solid torch, dashed paddle)")
    axes[0].grid(alpha=0.3)
    axes[0].legend(fontsize=6, ncol=2)
    from matplotlib.ticker import MaxNLocator
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    x = np.arange(len(labels))
    bars = axes[1].bar(x, means, yerr=errs, color=colors, capsize=2)
    for bar, hatch in zip(bars, hatches):
        bar.set_hatch(hatch)
    for xi, note in zip(x, notes):
        if note:
            axes[1].text(xi, 0.02, note, rotation=90, ha="center", va="bottom", fontsize=6)
    axes[1].set_xticks(x)
    axes[1].set_xticklabels(labels, rotation=75, ha="right", fontsize=6)
    axes[1].set(ylabel="test accuracy (mean, 95% CI)", ylim=(0, 1), title=f"test accuracy on {dataset}")
    axes[1].grid(alpha=0.3, axis="y")
    save_figure(fig, path)
