"""`dualbench report [DIR]`: a Markdown report and PNG plots rebuilt from DIR's CSVs (never edited by hand).

Reads DIR/runs.csv (dualbench run), DIR/bench.csv (dualbench bench) and DIR/parity.csv (dualbench
parity), each if present, and writes DIR/report.md, DIR/speed_summary.csv and DIR/plots/*.png, every
file atomically. Statistics come from common.stats (see its docstring for the choices).

Bench rows with status failed or diverged hold no timings: they are listed in their own table and left
out of every speed number; a cell that failed and then succeeded on a rerun counts as measured.
"""
import math
from pathlib import Path

import numpy as np
import pandas as pd

from dualbench.common.bench_table import latest, measured, row_status
from dualbench.common.errors import UserError
from dualbench.common.stats import BAND, compare_means, mean_ci, median_ci, paired_ratio_ci, ratio_halfwidth, verdict

OVERHEAD_TARGET = 0.97
# A configuration is measured on one node: pairs and ratios never mix the timings of two machines (a cluster
# bench keeps each configuration on one node; rows written before the node column read as one node).
CONFIG = ["suite", "device", "mode", "precision", "threads", "batch_size", "dataset", "node"]
PLOTS = "plots"


# ---------------------------------------------------------------------------------------------
# Loading


def read_optional(path):
    """A CSV as a DataFrame, or None when absent or empty; malformed files are a one-line UserError."""
    from dualbench.common.results import read_csv
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return None
    frame = read_csv(path)
    return frame if len(frame) else None


def duplicate_note(bench):
    """A line for the report when bench.csv repeats a measured cell (left out by `measured`)."""
    ok = bench[row_status(bench) == "ok"]
    n = int(ok.duplicated([c for c in ("cell_key", "loop") if c in ok]).sum())
    if not n:
        return None
    return (f"**Note: {n} bench.csv row(s) repeat a measured cell** (same cell key and loop: two commands wrote the "
            f"file at once, or files were concatenated). Only the first row of each is used.")


def problem_cells(bench):
    """Rows of cells that failed or diverged and have no ok row (a retried cell that then succeeded is
    measured, not a problem): the latest row per cell_key."""
    status = row_status(bench)
    bench = bench.assign(status=status, error=bench["error"] if "error" in bench else None)
    ok_keys = set(bench.loc[status == "ok", "cell_key"])
    bad = bench[(status != "ok") & ~bench["cell_key"].isin(ok_keys)]
    return latest(bad, ["cell_key"])


# ---------------------------------------------------------------------------------------------
# Tables


def fmt(value, digits=3):
    """Numbers for people: 12,345 for large values, 3 significant digits otherwise, n/a for missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def fmt_ci(estimate, lo, hi, digits=3, ratio=False):
    """'estimate [lo, hi]'; ratios with 3 decimals so that 0.97 and 1.05 band edges read exactly."""
    def one(v):
        return f"{v:.3f}" if ratio else fmt(float(v), digits)
    if not math.isfinite(estimate):
        return "n/a"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{one(estimate)} [CI n/a]"
    return f"{one(estimate)} [{one(lo)}, {one(hi)}]"


def markdown_table(frame):
    if frame is None or not len(frame):
        return "_(no rows)_\n"
    cols = [str(c).replace("|", "\\|") for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row.values) + " |")
    return "\n".join(lines) + "\n"


def final_runs(runs):
    """One final row per (task, dataset, backend, seed): the row carrying test accuracy, latest run wins."""
    final = runs[runs["test_acc"].notna()] if "test_acc" in runs else runs.iloc[0:0]
    return latest(final, ["task", "dataset", "backend", "seed"])


def accuracy_table(runs):
    """Test accuracy per task and backend over seeds (mean +- t CI) and tests of a difference."""
    final = final_runs(runs)
    rows = []
    for (task, dataset), group in final.groupby(["task", "dataset"], sort=False):
        by = {b: g.set_index("seed")["test_acc"] for b, g in group.groupby("backend")}
        torch_acc, paddle_acc = by.get("torch", pd.Series(dtype=float)), by.get("paddle", pd.Series(dtype=float))
        seeds = sorted(set(torch_acc.index) & set(paddle_acc.index))
        cmp = compare_means(torch_acc.values, paddle_acc.values,
                            pairs=[(torch_acc[s], paddle_acc[s]) for s in seeds])
        synthetic = bool(group["synthetic"].astype(str).str.lower().eq("true").any()) if "synthetic" in group else False
        p_values = [p for p in (cmp["p_welch"], cmp["p_paired"]) if math.isfinite(p)]
        differ = "n/a" if not p_values else ("yes" if min(p_values) < 0.05 else "no")
        row = {"task": task, "dataset": f"{dataset} (synthetic)" if synthetic else dataset,
               "epochs": fmt(int(group["epoch"].max())) if "epoch" in group else "n/a"}
        for name, acc in (("torch", torch_acc), ("paddle", paddle_acc)):
            mean, lo, hi = mean_ci(acc.values)
            half = (hi - lo) / 2 if math.isfinite(lo) else math.nan
            row[f"{name} acc"] = "n/a" if not acc.size else (
                f"{mean:.4f} ± {half:.4f} (n={acc.size})" if math.isfinite(half) else f"{mean:.4f} (n={acc.size})")
        row["torch − paddle [95% CI]"] = fmt_ci(cmp["diff"], cmp["lo"], cmp["hi"])
        row["p Welch"] = fmt(cmp["p_welch"])
        row["p paired (by seed)"] = fmt(cmp["p_paired"])
        row["differ at 5%?"] = differ
        rows.append(row)
    return pd.DataFrame(rows)


def with_node(bench):
    """bench rows with a node column. Rows written before rows recorded their node ran on one machine with the
    local executor: in a file whose other rows name a single node they count as that node (a resumed old
    file keeps its pairs together), otherwise they form one node of their own."""
    if "node" not in bench:
        return bench.assign(node=np.nan)
    known = bench["node"].dropna().unique()
    return bench.assign(node=bench["node"].fillna(known[0])) if len(known) == 1 else bench


def node_column(table, summary):
    """The table with a node column after the task when the rows come from more than one node."""
    if "node" in summary and summary["node"].nunique() > 1:
        table.insert(1, "node", summary["node"].fillna("?").astype(str).values)
    return table


def _pairs(group, value):
    """{repeat: value} per backend, the latest row per (backend, repeat)."""
    group = latest(group, ["backend", "repeat"])
    return {b: g.set_index("repeat")[value] for b, g in group.groupby("backend")}


def speed_summary(bench, loop="engine"):
    """Per task and configuration: throughput per backend (median over repeats, 95% CI), the paired
    ratio torch/paddle with its CI and verdict, and the supporting per-step numbers.

    Only ok rows count; `<backend>_failed` / `<backend>_diverged` count the cells left out, and a
    configuration with no complete pair says which backend failed in its verdict."""
    rows = []
    bench = with_node(bench)
    frame = bench[bench["loop"] == loop]
    for keys, all_rows in frame.groupby(["task"] + CONFIG, sort=False, dropna=False):
        info = dict(zip(["task"] + CONFIG, keys))
        group, bad = measured(all_rows), problem_cells(all_rows)
        sps = _pairs(group, "samples_per_s")
        row = dict(info)
        for name in ("torch", "paddle"):
            values = sps.get(name, pd.Series(dtype=float))
            med, lo, hi = median_ci(values.values)
            sub = latest(group[group["backend"] == name], ["repeat"])
            row.update({f"{name}_samples_per_s": med, f"{name}_lo": lo, f"{name}_hi": hi,
                        f"{name}_repeats": int(values.notna().sum()),
                        f"{name}_ms_per_step": float(sub["ms_per_step"].median()) if len(sub) else math.nan,
                        f"{name}_reader_share": float(sub["reader_share"].median()) if len(sub) else math.nan,
                        f"{name}_epoch_seconds": float(sub["epoch_seconds"].median()) if len(sub) else math.nan,
                        f"{name}_peak_mem_mb": float(sub["peak_mem_mb"].median()) if len(sub) else math.nan,
                        f"{name}_first_step_s": float(sub["first_step_s"].median()) if len(sub) else math.nan})
        t, p = sps.get("torch", pd.Series(dtype=float)), sps.get("paddle", pd.Series(dtype=float))
        common = sorted(set(t.index) & set(p.index))
        ratio = paired_ratio_ci(t[common].values, p[common].values) if common else paired_ratio_ci([], [])
        row.update({"ratio": ratio["ratio"], "ratio_lo": ratio["lo"], "ratio_hi": ratio["hi"], "pairs": ratio["n"],
                    "ratio_ci_pct": 100 * ratio_halfwidth(ratio["ratio"], ratio["lo"], ratio["hi"]),
                    "verdict": verdict(ratio["lo"], ratio["hi"])})
        for name in ("torch", "paddle"):
            for status in ("failed", "diverged"):
                row[f"{name}_{status}"] = int(((bad["backend"] == name) & (bad["status"] == status)).sum())
        if not ratio["n"] and len(bad):
            what = sorted(set(bad["backend"] + " " + bad["status"]))
            row["verdict"] = f"n/a ({', '.join(what)})"
        rows.append(row)
    return pd.DataFrame(rows)


def overhead_summary(bench):
    """Harness overhead per task, backend and configuration, paired by repeat (same worker process):
    end_to_end = engine samples/s / bare samples/s; compute = bare ms/step / engine compute ms/step
    (the engine's step time without the reader's)."""
    rows = []
    bench = measured(with_node(bench))
    frame = bench[bench["loop"].isin(["engine", "bare"])]
    for keys, group in frame.groupby(["task", "backend"] + CONFIG, sort=False, dropna=False):
        group = latest(group, ["loop", "repeat"])
        engine, bare = (group[group["loop"] == loop].set_index("repeat") for loop in ("engine", "bare"))
        common = sorted(set(engine.index) & set(bare.index))
        if not common:
            continue
        e2e = paired_ratio_ci(engine.loc[common, "samples_per_s"].values, bare.loc[common, "samples_per_s"].values)
        compute = paired_ratio_ci(bare.loc[common, "ms_per_step"].values,
                                  engine.loc[common, "compute_ms_per_step"].values)
        rows.append({**dict(zip(["task", "backend"] + CONFIG, keys)),
                     "end_to_end": e2e["ratio"], "end_to_end_lo": e2e["lo"], "end_to_end_hi": e2e["hi"],
                     "compute": compute["ratio"], "compute_lo": compute["lo"], "compute_hi": compute["hi"],
                     "reader_share": float(engine.loc[common, "reader_share"].median()), "pairs": e2e["n"]})
    return pd.DataFrame(rows)


def ttt_summary(bench):
    """Time to target per task and configuration, ok rows only; `<backend>_reached` says how many
    repeats reached the target, and how many failed or diverged (those have no time)."""
    bench = with_node(bench)
    frame = bench[bench["loop"] == "ttt"]
    rows = []
    for keys, all_rows in frame.groupby(["task"] + CONFIG, sort=False, dropna=False):
        group, bad = measured(all_rows), problem_cells(all_rows)
        row = dict(zip(["task"] + CONFIG, keys))
        targets = pd.to_numeric(group["target_accuracy"], errors="coerce").dropna()
        row["target"] = float(targets.iloc[0]) if len(targets) else math.nan
        secs = _pairs(group, "ttt_seconds")
        for name in ("torch", "paddle"):
            sub = latest(group[group["backend"] == name], ["repeat"])
            reached = sub["ttt_reached"].astype(str).str.lower().eq("true")
            med, lo, hi = median_ci(secs.get(name, pd.Series(dtype=float)).values)
            row[f"{name}_seconds"], row[f"{name}_lo"], row[f"{name}_hi"] = med, lo, hi
            problems = bad[bad["backend"] == name]["status"].value_counts()
            row[f"{name}_reached"] = f"{int(reached.sum())}/{len(sub)}" + "".join(
                f" ({n} {status})" for status, n in problems.items())
            row[f"{name}_epochs"] = float(sub["ttt_epochs"].median()) if len(sub) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def machine_load_note(bench):
    """A warning when the machine was busy with other work during the benchmark (load above the cores
    plus the one worker that runs at a time)."""
    if "load_avg" not in bench or "cpu_count" not in bench:
        return None
    load = pd.to_numeric(bench["load_avg"], errors="coerce").dropna()
    cores = pd.to_numeric(bench["cpu_count"], errors="coerce").dropna()
    if load.empty or cores.empty:
        return None
    median_load, n_cores = float(load.median()), int(cores.max())
    if median_load <= n_cores + 0.5:
        return f"Machine load during the benchmark: median 1-minute load average {median_load:.1f} on {n_cores} CPUs."
    return (f"**Warning: the machine was busy** (median 1-minute load average {median_load:.1f} on {n_cores} CPUs, "
            f"max {float(load.max()):.1f}): other work competed with the benchmark, so throughputs are low and noisy "
            f"and CIs wide. Rerun on a quiet machine for numbers to quote.")


def problem_table(bench):
    """Failed and diverged cells, one line per task, backend, configuration, status and error (the repeats
    and loops it hit listed)."""
    bad = problem_cells(bench)
    if not len(bad):
        return None
    bad = bad.assign(config=[config_label(r) for _, r in bad.iterrows()], error=bad["error"].fillna(""))
    rows = []
    for (task, backend, config, status, error), group in bad.groupby(
            ["task", "backend", "config", "status", "error"], sort=False, dropna=False):
        repeats = sorted({int(r) for r in group["repeat"].dropna()})
        rows.append({"task": task, "backend": backend, "config": config,
                     "loop": ", ".join(dict.fromkeys(group["loop"].astype(str))),
                     "repeats": ", ".join(map(str, repeats)), "status": status, "error": error})
    return pd.DataFrame(rows)


def config_label(row):
    parts = [str(row["device"]), str(row["mode"]), str(row["precision"]), f"{fmt(row['threads'])} thr",
             f"batch {fmt(row['batch_size'])}"]
    return ", ".join(parts)


def parity_summary(parity):
    """Per task: checks run, checks within tolerance, worst max_rel, and the failing checks with causes."""
    if "task" not in parity:
        return None
    within = parity["within"].astype(str).str.lower().isin(["true", "1", "yes"]) if "within" in parity else None
    rows = []
    for task, group in parity.groupby("task", sort=False):
        ok = within[group.index] if within is not None else None
        failed = group[~ok] if ok is not None else group.iloc[0:0]
        causes = []
        for _, f in failed.head(4).iterrows():
            what = "/".join(str(f[c]) for c in ("check", "name") if c in f and pd.notna(f[c]))
            cause = f.get("cause") if "cause" in f and pd.notna(f.get("cause")) else ""
            causes.append(f"{what}" + (f": {cause}" if cause else ""))
        rows.append({"task": task, "checks": len(group),
                     "within tolerance": int(ok.sum()) if ok is not None else "n/a",
                     "worst max_abs": fmt(float(pd.to_numeric(group["max_abs"], errors="coerce").max()))
                     if "max_abs" in group else "n/a",
                     "worst max_rel": fmt(float(pd.to_numeric(group["max_rel"], errors="coerce").max()))
                     if "max_rel" in group else "n/a",
                     "failing checks": "; ".join(causes) + (" …" if len(failed) > 4 else "") or "-"})
    return pd.DataFrame(rows)


def machine_table(frames):
    """Where the numbers come from: machine, versions, threads, commit (one line per distinct combination)."""
    cols = ["backend", "framework_version", "device", "device_name", "threads", "platform", "python", "numpy",
            "git_commit"]
    parts = []
    for source, frame in frames.items():
        if frame is None or "backend" not in frame:
            continue
        have = [c for c in cols if c in frame]
        sub = frame[have].drop_duplicates().copy()
        sub.insert(0, "source", source)
        parts.append(sub)
    if not parts:
        return None
    table = pd.concat(parts, ignore_index=True).drop_duplicates()
    return table.fillna("n/a").astype(str)


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg backend; each PNG written atomically)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UserError("plots need matplotlib: pip install 'dualbench[report]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path):
    from dualbench.common.fsutil import atomic_path
    plt = _pyplot()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


COLORS = {"torch": "#d62728", "paddle": "#1f77b4"}


def plot_curves(runs, task, dataset, path):
    """Training curves of both backends overlaid: train loss, and val (else train) accuracy per epoch.

    One line per (backend, run, seed) of one task on one dataset, so runs never merge into one line.
    """
    plt = _pyplot()
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
    plt = _pyplot()
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


# ---------------------------------------------------------------------------------------------
# The report


def _speed_markdown(summary):
    table = pd.DataFrame({
        "task": summary["task"],
        "config": [config_label(r) for _, r in summary.iterrows()],
        "torch samples/s": [fmt_ci(r["torch_samples_per_s"], r["torch_lo"], r["torch_hi"]) for _, r in summary.iterrows()],
        "paddle samples/s": [fmt_ci(r["paddle_samples_per_s"], r["paddle_lo"], r["paddle_hi"]) for _, r in summary.iterrows()],
        "torch/paddle [95% CI]": [fmt_ci(r["ratio"], r["ratio_lo"], r["ratio_hi"], ratio=True) for _, r in summary.iterrows()],
        "CI ±%": [f"{v:.1f}" if math.isfinite(v) else "n/a" for v in summary["ratio_ci_pct"]],
        "verdict (torch is …)": summary["verdict"],
        "pairs": summary["pairs"],
        "left out (failed / diverged)": [excluded_label(r) for _, r in summary.iterrows()],
    })
    table = node_column(table, summary)
    details = pd.DataFrame({
        "task": summary["task"],
        "ms/step torch / paddle": [f"{fmt(r['torch_ms_per_step'])} / {fmt(r['paddle_ms_per_step'])}" for _, r in summary.iterrows()],
        "reader share torch / paddle": [f"{r['torch_reader_share']:.1%} / {r['paddle_reader_share']:.1%}"
                                        if math.isfinite(r["torch_reader_share"]) and math.isfinite(r["paddle_reader_share"])
                                        else "n/a" for _, r in summary.iterrows()],
        "epoch s torch / paddle": [f"{fmt(r['torch_epoch_seconds'])} / {fmt(r['paddle_epoch_seconds'])}" for _, r in summary.iterrows()],
        "first step s torch / paddle": [f"{fmt(r['torch_first_step_s'])} / {fmt(r['paddle_first_step_s'])}" for _, r in summary.iterrows()],
        "peak MiB torch / paddle": [f"{fmt(r['torch_peak_mem_mb'], 4)} / {fmt(r['paddle_peak_mem_mb'], 4)}" for _, r in summary.iterrows()],
    })
    details = node_column(details, summary)
    return markdown_table(table), markdown_table(details)


def precision_line(summary, target=3.0):
    """How many ratio CIs are within +-target percent: the headline precision of the speed table."""
    widths = summary["ratio_ci_pct"].to_numpy(float)
    measured = widths[np.isfinite(widths)]
    if not measured.size:
        return "No configuration has a ratio CI (fewer than 2 complete pairs)."
    within = int((measured <= target).sum())
    pairs = summary.loc[np.isfinite(widths), "pairs"]
    return (f"Ratio CIs within ±{target:g}%: {within} of {measured.size} configurations with a CI "
            f"(widest ±{measured.max():.1f}%, median ±{np.median(measured):.1f}%; pairs {int(pairs.min())}–{int(pairs.max())}).")


def excluded_label(row):
    """'paddle: 2 failed' for the cells of a configuration that are not in its numbers; '-' for none."""
    parts = [f"{name}: {int(row[f'{name}_{status}'])} {status}" for name in ("torch", "paddle")
             for status in ("failed", "diverged") if row.get(f"{name}_{status}", 0)]
    return "; ".join(parts) or "-"


def _overhead_markdown(overhead):
    def mark(value):
        return "yes" if value >= OVERHEAD_TARGET else "no"
    table = pd.DataFrame({
        "task": overhead["task"], "backend": overhead["backend"],
        "config": [config_label(r) for _, r in overhead.iterrows()],
        "harness (compute) [95% CI]": [fmt_ci(r["compute"], r["compute_lo"], r["compute_hi"], ratio=True) for _, r in overhead.iterrows()],
        f"≥ {OVERHEAD_TARGET}": [mark(v) for v in overhead["compute"]],
        "end to end, with reader [95% CI]": [fmt_ci(r["end_to_end"], r["end_to_end_lo"], r["end_to_end_hi"], ratio=True) for _, r in overhead.iterrows()],
        f"≥ {OVERHEAD_TARGET} ": [mark(v) for v in overhead["end_to_end"]],
        "reader share": [f"{v:.1%}" for v in overhead["reader_share"]],
        "pairs": overhead["pairs"],
    })
    return markdown_table(node_column(table, overhead))


def _ttt_markdown(ttt):
    table = pd.DataFrame({
        "task": ttt["task"], "dataset": ttt["dataset"], "target": ttt["target"],
        "torch s (median [CI])": [fmt_ci(r["torch_seconds"], r["torch_lo"], r["torch_hi"]) for _, r in ttt.iterrows()],
        "torch reached": ttt["torch_reached"], "torch epochs": [fmt(v) for v in ttt["torch_epochs"]],
        "paddle s (median [CI])": [fmt_ci(r["paddle_seconds"], r["paddle_lo"], r["paddle_hi"]) for _, r in ttt.iterrows()],
        "paddle reached": ttt["paddle_reached"], "paddle epochs": [fmt(v) for v in ttt["paddle_epochs"]],
    })
    return markdown_table(node_column(table, ttt))


def safe_name(text):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text))


def build_report(directory, out=None, plots=True):
    """Write the report (default DIR/report.md), its plots and DIR/speed_summary.csv; returns the report path."""
    from dualbench.common.fsutil import atomic_write_text
    from dualbench.common.results import write_table
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: no such results folder (run `dualbench run/bench --out {directory}` first)")
    out = Path(out) if out else directory / "report.md"
    plot_dir = out.parent / PLOTS
    runs, bench, parity = (read_optional(directory / f) for f in ("runs.csv", "bench.csv", "parity.csv"))
    if runs is None and bench is None and parity is None:
        raise UserError(f"{directory}: none of runs.csv, bench.csv, parity.csv found")

    md = ["# dualbench report", "",
          f"Built by `dualbench report` from the CSV files in `{directory}` "
          f"({', '.join(f'{n}: {len(f)} rows' for n, f in (('runs.csv', runs), ('bench.csv', bench), ('parity.csv', parity)) if f is not None)}). "
          "Every number below is derived from those rows; rebuild with the same command.", ""]

    md += ["## Accuracy per task and backend", ""]
    if runs is None:
        md += ["`dualbench run` was not run into this folder (no runs.csv).", ""]
    else:
        md += ["Test accuracy at the end of training (best epoch where the task keeps the best checkpoint): mean ± "
               "95% t-interval half-width over seeds. The difference is tested with Welch's t-test and, where "
               "both backends ran the same seeds, a paired t-test by seed. Synthetic data shows the pipeline "
               "works; it is not an accuracy claim.", "", markdown_table(accuracy_table(runs))]
        if plots:
            md += ["Training curves (each line one seed; torch red, paddle blue):", ""]
            for task, dataset in final_runs(runs)[["task", "dataset"]].drop_duplicates().itertuples(index=False):
                name = f"curves-{safe_name(task)}-{safe_name(dataset)}.png"
                plot_curves(runs, task, dataset, plot_dir / name)
                md.append(f"![{task} on {dataset}]({PLOTS}/{name})")
            md.append("")

    md += ["## Speed: torch / paddle throughput", ""]
    if bench is None:
        md += ["`dualbench bench` was not run into this folder (no bench.csv).", ""]
    else:
        summary = speed_summary(bench)
        for note in (machine_load_note(bench), duplicate_note(bench)):
            if note:
                md += [note, ""]
        problems = problem_table(bench)
        if problems is not None:
            md += ["### Failed / diverged cells", "",
                   f"{len(problem_cells(bench))} bench.csv row(s) recorded a cell that failed (an exception, out of "
                   "memory or a crashed worker) or diverged (NaN/Inf loss or weights). They hold no timings and are "
                   "left out of every number below; a configuration without a complete torch/paddle pair has no "
                   "ratio. Rerunning the same `dualbench bench` command retries the failed cells.", "",
                   markdown_table(problems)]
        if len(summary):
            write_table(directory / "speed_summary.csv", summary)
            table, details = _speed_markdown(summary)
            md += [f"Steady-state samples/s through the native DataLoader (warm-up excluded): median over repeats "
                   f"with a distribution-free 95% CI (needs ≥ 6 repeats). Each repeat runs torch and paddle back to "
                   f"back in fresh worker processes with the same threads; the ratio is the geometric mean of the "
                   f"per-pair ratios with a paired t-interval on the log ratios. Verdict: *faster* / *slower* when "
                   f"the whole CI lies above {1 + BAND:.2f} / below {1 - BAND:.2f}, *same* when it lies inside "
                   f"[{1 - BAND:.2f}, {1 + BAND:.2f}], otherwise *inconclusive*. *CI ±%*: the CI's larger "
                   f"relative half-width. Configurations wider than the suite's target after the first repeats get "
                   f"more pairs in a second stage, as far as the time budget allows (README, bench).",
                   "", precision_line(summary), "", table,
                   "Per step: median ms/step, the share of it spent in the reader (DataLoader + copy to device), the "
                   "time per epoch of the task's real training set at that speed, the first step (includes "
                   "compilation in compiled mode) and peak memory (RSS of the worker on CPU, allocator peak on GPU).",
                   "", details]
            if plots:
                plot_throughput(summary, plot_dir / "throughput.png")
                md += [f"![throughput]({PLOTS}/throughput.png)", ""]
        overhead = overhead_summary(bench)
        md += ["## Harness overhead", ""]
        if len(overhead):
            md += [f"The engine against a bare loop over batches pre-loaded on the device (same model, optimizer, "
                   f"batch size, same worker process, windows alternating). *Harness (compute)* = bare ms/step ÷ the "
                   f"engine's ms/step without its reader time: what the harness itself costs. *End to end* = engine "
                   f"samples/s ÷ bare samples/s: this also charges the input pipeline (the framework's DataLoader "
                   f"and the batch gather). Target ≥ {OVERHEAD_TARGET}.", "", _overhead_markdown(overhead)]
        else:
            md += ["Not measured (run `dualbench bench --bare`).", ""]
        ttt = ttt_summary(bench)
        if len(ttt):
            md += ["## Time to target accuracy", "",
                   "Training seconds (evaluation excluded) until the evaluation accuracy first reaches the task's "
                   "target, through the engine's epoch loop; n/a when not reached within the task's epochs.", "",
                   _ttt_markdown(ttt)]

    md += ["## Parity", ""]
    if parity is None:
        md += ["Parity was not run (no parity.csv; see `dualbench parity`).", ""]
    else:
        table = parity_summary(parity)
        md += ["Numerical agreement of the two backends with shared weights (from parity.csv).", "",
               markdown_table(table) if table is not None else "_parity.csv has no task column_\n"]

    md += ["## Machine and versions", ""]
    machine = machine_table({"runs": runs, "bench": measured(bench) if bench is not None else None,
                             "parity": parity})
    md += [markdown_table(machine) if machine is not None else "_no metadata columns found_\n"]
    atomic_write_text(out, "\n".join(md) + "\n")
    return out


def print_speed_summary(csv_path):
    """The ratio table on the terminal, after `dualbench bench`."""
    from dualbench.common.results import read_csv
    bench = read_csv(csv_path)
    summary = speed_summary(bench)
    problems = problem_table(bench)
    if problems is not None:
        print("failed / diverged cells (left out of the ratios):")
        print(problems.to_string(index=False))
        print()
    if not len(summary):
        return
    table = pd.DataFrame({
        "task": summary["task"], "config": [config_label(r) for _, r in summary.iterrows()],
        "torch/s": [fmt(v, 4) for v in summary["torch_samples_per_s"]],
        "paddle/s": [fmt(v, 4) for v in summary["paddle_samples_per_s"]],
        "torch/paddle [95% CI]": [fmt_ci(r["ratio"], r["ratio_lo"], r["ratio_hi"], ratio=True) for _, r in summary.iterrows()],
        "CI ±%": [f"{v:.1f}" if math.isfinite(v) else "n/a" for v in summary["ratio_ci_pct"]],
        "verdict": summary["verdict"], "pairs": summary["pairs"]})
    print(node_column(table, summary).to_string(index=False))
    print(precision_line(summary))
    overhead = overhead_summary(bench)
    if len(overhead):
        print("\nharness overhead (engine vs bare loop):")
        print(pd.DataFrame({
            "task": overhead["task"], "backend": overhead["backend"],
            "compute [95% CI]": [fmt_ci(r["compute"], r["compute_lo"], r["compute_hi"], ratio=True) for _, r in overhead.iterrows()],
            "end to end [95% CI]": [fmt_ci(r["end_to_end"], r["end_to_end_lo"], r["end_to_end_hi"], ratio=True)
                                    for _, r in overhead.iterrows()]}).to_string(index=False))


def cmd_report(args):
    path = build_report(args.dir, args.out, plots=not args.no_plots)
    print(f"report written to {path}")


def register(subparsers):
    p = subparsers.add_parser("report", help="Markdown report + PNG plots from DIR's runs.csv, bench.csv, parity.csv")
    p.add_argument("dir", nargs="?", type=Path, default=Path("runs"), help="results folder (default: runs/)")
    p.add_argument("--out", type=Path, help="report file (default: DIR/report.md); plots go beside it in plots/")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.set_defaults(func=cmd_report)
