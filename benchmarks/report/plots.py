"""Plots (matplotlib, Agg backend; each PNG written atomically). `pyplot()` and `save_figure()` are public:
`dualbench study` draws its figures with them."""
import numpy as np

from dualbench.common.errors import UserError
from dualbench.common.stats import BAND
from dualbench.report.tables import config_label, final_runs


def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UserError("plots need matplotlib: pip install 'dualbench[report]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path):
    from dualbench.common.fsutil import atomic_path
    plt = pyplot()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


COLORS = {"torch": "#d62728", "paddle": "#1f77b4"}


def plot_curves(runs, task, dataset, path):
    """Training curves of both backends overlaid: train loss, and val (else train) accuracy per epoch.

    One line per (backend, run, seed) of one task on one dataset, so runs never merge into one line.
    """
    plt = pyplot()
    final = final_runs(runs)
    mine = final[(final["task"] == task) & (final["dataset"] == dataset)]
    sub = runs[(runs["task"] == task) & (runs["dataset"] == dataset) & runs["run_id"].isin(mine["run_id"])]
    has_val = sub["val_acc"].notna().any()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for (backend, _, seed), g in sub.groupby(["backend", "run_id", "seed"]):
        g = g.sort_values("epoch")
        color = COLORS.get(backend, "gray")
        label = backend if seed == sub[sub["backend"] == backend]["seed"].min() else None
        axes[0].plot(g["epoch"], g["train_loss"], color=color, alpha=0.8, lw=1.2, label=label, marker=".")
        axes[1].plot(g["epoch"], g["val_acc" if has_val else "train_acc"], color=color, alpha=0.8, lw=1.2,
                     label=label, marker=".")
    axes[0].set(xlabel="epoch", ylabel="train loss", title=f"{task} on {dataset}: training loss")
    axes[1].set(xlabel="epoch", ylabel="val accuracy" if has_val else "train accuracy",
                title="validation accuracy" if has_val else "training accuracy")
    from matplotlib.ticker import MaxNLocator
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    save_figure(fig, path)


def plot_throughput(summary, path):
    """Throughput per task, torch vs paddle bars with 95% CI (log scale), and the ratio with its CI."""
    plt = pyplot()
    from matplotlib.ticker import FormatStrFormatter
    one_config_per_task = summary["task"].is_unique   # then the table says the config; the plot stays readable
    labels = [r["task"] if one_config_per_task else f"{r['task']}\n{config_label(r)}" for _, r in summary.iterrows()]
    if "node" in summary and summary["node"].nunique() > 1:   # one bar group per node: never pooled
        labels = [f"{label}\n{node}" for label, node in zip(labels, summary["node"].fillna("?"))]
    x = np.arange(len(summary))
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 0.55 * len(summary) + 2), 7.5), sharex=True)
    for offset, name in ((-0.2, "torch"), (0.2, "paddle")):
        med = summary[f"{name}_samples_per_s"].to_numpy(float)
        lo, hi = summary[f"{name}_lo"].to_numpy(float), summary[f"{name}_hi"].to_numpy(float)
        err = np.vstack([np.where(np.isfinite(lo), med - lo, 0), np.where(np.isfinite(hi), hi - med, 0)])
        axes[0].bar(x + offset, med, width=0.4, color=COLORS[name], label=name, yerr=err, capsize=2)
    axes[0].set_yscale("log")
    axes[0].set(ylabel="samples/s (median, 95% CI)", title="Steady-state training throughput")
    axes[0].legend(fontsize=8)
    ratio = summary["ratio"].to_numpy(float)
    lo, hi = summary["ratio_lo"].to_numpy(float), summary["ratio_hi"].to_numpy(float)
    err = np.vstack([np.where(np.isfinite(lo), ratio - lo, 0), np.where(np.isfinite(hi), hi - ratio, 0)])
    axes[1].axhspan(1 - BAND, 1 + BAND, color="gray", alpha=0.2, label=f"same (±{BAND:.0%})")
    axes[1].axhline(1, color="gray", lw=0.8)
    axes[1].errorbar(x, ratio, yerr=err, fmt="o", color="black", capsize=3)
    axes[1].set_yscale("log")    # a ratio of 2 and of 1/2 are equally far from 1
    axes[1].yaxis.set_major_formatter(FormatStrFormatter("%g"))   # 2, not 2×10⁰
    axes[1].yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    axes[1].tick_params(axis="y", which="minor", labelsize=7)
    axes[1].set(ylabel="torch / paddle throughput (log)", title="Speed ratio (95% CI over interleaved pairs)")
    for i in np.flatnonzero(~np.isfinite(ratio)):   # say why a configuration has no point
        why = "no ratio" if "verdict" not in summary else str(summary["verdict"].iloc[i]).removeprefix("n/a ")
        axes[1].annotate(why.strip("()") or "no ratio", (x[i], 1.0), rotation=90, ha="center", va="bottom",
                         fontsize=7, color="dimgray")
    axes[1].legend(fontsize=8)
    axes[1].set_xticks(x)
    axes[1].set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    save_figure(fig, path)
