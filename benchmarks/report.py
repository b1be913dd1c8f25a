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
from dualbench.common.stats import BAND, compare_means, mean_ci
from dualbench.speed_summary import (OVERHEAD_TARGET, infer_summary, node_column, overhead_summary,  # noqa: F401
                                     problem_cells, speed_summary, stage_ratios, ttt_summary, tuning_summary,
                                     with_settings)

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
    bad = problem_cells(with_settings(bench))
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
    """'cpu, eager fp32, 2 threads, batch 64' for a shared setting; 'cpu, each at its best, batch 64'; a model
    pair's optimizer and learning rate at the end (two runs of one pair may differ only there)."""
    pairing = row["pairing"] if "pairing" in row and isinstance(row["pairing"], str) else None
    if pairing is None:
        pairing = f"{row['mode']} {row['precision']}, {fmt(row['threads'])} thr"
    return ", ".join([str(row["device"]), pairing, f"batch {fmt(row['batch_size'])}"]) + pair_training(row)


def pair_training(row):
    """', sgd lr 0.001' from a model pair's model_spec ('' for a task, or a file from before it was recorded)."""
    spec = row.get("model_spec") if hasattr(row, "get") else None
    if not isinstance(spec, str) or " lr " not in spec:
        return ""
    return ", " + spec.rsplit("|", 1)[-1].strip()


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
        "settings (torch; paddle)": [r["torch_setting"] if r["torch_setting"] == r["paddle_setting"] else
                                     f"{r['torch_setting']}; {r['paddle_setting']}" for _, r in summary.iterrows()],
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


def _headline_markdown(ratios):
    """Per task: the torch/paddle ratio at equal settings and with each framework at its best."""
    def ci(r, label):
        if not isinstance(r[f"{label}_verdict"], str):
            return "not measured"
        return f"{fmt_ci(r[f'{label}_ratio'], r[f'{label}_ratio_lo'], r[f'{label}_ratio_hi'], ratio=True)} {r[f'{label}_verdict']}"

    table = pd.DataFrame({
        "task": [f"{r['task']}{pair_training(r)}" for _, r in ratios.iterrows()],
        "batch": [fmt(v) for v in ratios["batch_size"]],
        "equal settings: torch/paddle [95% CI]": [ci(r, "equal") for _, r in ratios.iterrows()],
        "equal settings": [equal_label(r) for _, r in ratios.iterrows()],
        "each at its best: torch/paddle [95% CI]": [ci(r, "best") for _, r in ratios.iterrows()],
        "torch's best": [r["best_torch_setting"] if isinstance(r["best_torch_setting"], str) else "n/a"
                         for _, r in ratios.iterrows()],
        "paddle's best": [r["best_paddle_setting"] if isinstance(r["best_paddle_setting"], str) else "n/a"
                          for _, r in ratios.iterrows()],
        "input-pipeline-bound (engine ÷ bare < 0.97)": [
            "; ".join(f"{stage}: {r[f'{stage}_bound']}" for stage in ("equal", "best")
                      if isinstance(r[f"{stage}_bound"], str) and r[f"{stage}_bound"]) or "-"
            for _, r in ratios.iterrows()],
    })
    return markdown_table(node_column(table, ratios))


def equal_label(r):
    """The shared setting, with the switches each framework had on by default ('torch onednn=on')."""
    if not isinstance(r["equal_torch_setting"], str):
        return "n/a"
    effect = [f"{name} {r[f'equal_{name}_in_effect']}" for name in ("torch", "paddle")
              if isinstance(r[f"equal_{name}_in_effect"], str) and r[f"equal_{name}_in_effect"]]
    return r["equal_torch_setting"] + (f" ({', '.join(effect)})" if effect else "")


def _tuning_markdown(tuning):
    """One line per task and backend: every candidate's samples/s, the winner in bold."""
    rows = []
    for (task, backend), group in tuning.groupby(["task", "backend"], sort=False):
        parts = []
        for _, r in group.sort_values("samples_per_s", ascending=False).iterrows():
            text = f"{r['setting']}: {fmt(r['samples_per_s'], 4)}"
            parts.append(f"**{text}**" if r["chosen"] else f"{text} ({r['vs_fastest']:.0%})")
        rows.append({"task": task, "backend": backend, "workload": group["workload"].iloc[0],
                     "batch": fmt(group["batch_size"].iloc[0]), "candidates, fastest first (samples/s)": "; ".join(parts)})
    return markdown_table(pd.DataFrame(rows))


def _infer_markdown(infer):
    def stage(r):
        return r["pairing"] if r["stage"] != "best" else f"best: torch {r['torch_setting']}; paddle {r['paddle_setting']}"
    table = pd.DataFrame({
        "task": infer["task"], "batch": [fmt(v) for v in infer["batch_size"]],
        "setting": [stage(r) for _, r in infer.iterrows()],
        "torch ms (median [CI])": [fmt_ci(r["torch_latency_ms"], r["torch_lo"], r["torch_hi"]) for _, r in infer.iterrows()],
        "torch p95 ms": [fmt(r["torch_p95_ms"]) for _, r in infer.iterrows()],
        "paddle ms (median [CI])": [fmt_ci(r["paddle_latency_ms"], r["paddle_lo"], r["paddle_hi"]) for _, r in infer.iterrows()],
        "paddle p95 ms": [fmt(r["paddle_p95_ms"]) for _, r in infer.iterrows()],
        "latency torch/paddle [95% CI]": [fmt_ci(r["ratio"], r["ratio_lo"], r["ratio_hi"], ratio=True) for _, r in infer.iterrows()],
        "verdict (torch is …)": infer["verdict"], "pairs": infer["pairs"],
    })
    return markdown_table(node_column(table, infer))


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
        "task": overhead["task"], "backend": overhead["backend"], "stage": overhead["stage"],
        "setting": overhead["setting"], "batch": [fmt(v) for v in overhead["batch_size"]],
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
        "setting": [r["pairing"] if r["stage"] != "best" else f"best: torch {r['torch_setting']}; paddle "
                    f"{r['paddle_setting']}" for _, r in ttt.iterrows()],
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
        overhead = overhead_summary(bench)
        if len(summary):
            write_table(directory / "speed_summary.csv", summary)
            table, details = _speed_markdown(summary)
            ratios = stage_ratios(summary, overhead)
            if (summary["stage"] == "best").any():
                md += ["### Equal settings and each at its best", "",
                       "The torch/paddle training throughput ratio (above 1: torch faster) twice: with both at the "
                       "same setting (the machine's cores as math threads, each framework's default switches) and "
                       "with each framework at its own fastest setting, chosen by the tuning stage below on windows "
                       "that are not reused here. A ratio is *input-pipeline-bound* when a side's engine loop "
                       f"reaches less than {OVERHEAD_TARGET} of its bare loop (pre-loaded tensors) at that setting: it "
                       "then measures that framework's DataLoader as much as its model.", "",
                       _headline_markdown(ratios)]
            md += ["### All configurations", "",
                   f"Steady-state samples/s through the native DataLoader (warm-up excluded; model pairs: pre-loaded "
                   f"random batches): median over repeats with a distribution-free 95% CI (needs ≥ 6 repeats). Each "
                   f"repeat runs torch and paddle back to back in their own worker processes, each at the setting "
                   f"shown; the ratio is the geometric mean of the per-pair ratios with a paired t-interval on the "
                   f"log ratios. Verdict: *faster* / *slower* when the whole CI lies above {1 + BAND:.2f} / below "
                   f"{1 - BAND:.2f}, *same* when it lies inside [{1 - BAND:.2f}, {1 + BAND:.2f}], otherwise "
                   f"*inconclusive*. *CI ±%*: the CI's larger relative half-width. Configurations wider than the "
                   f"suite's target after the first repeats get more pairs in a second stage, as far as the time "
                   f"budget allows (README, bench).",
                   "", precision_line(summary), "", table,
                   "Per step: median ms/step, the share of it spent in the reader (DataLoader + copy to device), the "
                   "time per epoch of the task's real training set at that speed, the first step (includes "
                   "compilation in compiled mode) and peak memory (RSS of the worker on CPU, allocator peak on GPU).",
                   "", details]
            if plots:
                plot_throughput(summary, plot_dir / "throughput.png")
                md += [f"![throughput]({PLOTS}/throughput.png)", ""]
        tuning = tuning_summary(bench)
        if len(tuning):
            write_table(directory / "tuning_summary.csv", tuning)
            md += ["### Tuning", "",
                   "Each framework on its own, one short cell per candidate setting (math threads, oneDNN on and off; "
                   "compiled mode with --tune-compile); the fastest (bold) is the framework's *best* setting. The "
                   "percentages are each candidate's speed relative to the fastest. These cells only choose: the "
                   "ratios above come from new, interleaved repeats (no winner's curse).", "",
                   _tuning_markdown(tuning)]
        infer = infer_summary(bench)
        if len(infer):
            write_table(directory / "infer_summary.csv", infer)
            md += ["## Inference latency", "",
                   "Eval mode, no autograd, one batch per call over batches already in memory; the clock is read "
                   "around every call (after a device sync). Per repeat the median and 95th percentile over its "
                   "calls; the table gives the median over repeats with a 95% CI, and the paired latency ratio "
                   "torch/paddle (below 1: torch answers faster; the verdict says whether torch is faster).", "",
                   _infer_markdown(infer)]
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
    best = summary[summary["stage"] == "best"]
    if len(best):
        print("\neach at its best (chosen by tuning):")
        print(pd.DataFrame({"task": best["task"], "torch": best["torch_setting"], "paddle": best["paddle_setting"]})
              .to_string(index=False))
    infer = infer_summary(bench)
    if len(infer):
        print("\ninference latency (ms per batch, median over repeats; ratio below 1: torch answers faster):")
        print(pd.DataFrame({
            "task": infer["task"], "batch": [fmt(v) for v in infer["batch_size"]], "stage": infer["stage"],
            "torch ms": [fmt(v) for v in infer["torch_latency_ms"]], "torch p95": [fmt(v) for v in infer["torch_p95_ms"]],
            "paddle ms": [fmt(v) for v in infer["paddle_latency_ms"]], "paddle p95": [fmt(v) for v in infer["paddle_p95_ms"]],
            "torch/paddle [95% CI]": [fmt_ci(r["ratio"], r["ratio_lo"], r["ratio_hi"], ratio=True) for _, r in infer.iterrows()],
            "verdict": infer["verdict"]}).to_string(index=False))
    overhead = overhead_summary(bench)
    if len(overhead):
        print("\nharness overhead (engine vs bare loop):")
        print(pd.DataFrame({
            "task": overhead["task"], "backend": overhead["backend"], "setting": overhead["setting"],
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
