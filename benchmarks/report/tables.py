"""The report's tables as DataFrames, and the labels and notes that go with them (no Markdown layout here)."""
import math

import numpy as np
import pandas as pd

from dualbench.common.stats import compare_means, mean_ci, pairs_for_spread
from dualbench.report.markdown import fmt, fmt_ci
from dualbench.report.speed import FLOOR_SCOPE, TARGET, problem_cells, with_settings
from dualbench.timings.table import MACHINE_NOISE, NEEDED_CAP, NO_FIT, latest, row_status


def duplicate_note(bench):
    """A line for the report when bench.csv repeats a measured cell (left out by `measured`)."""
    ok = bench[row_status(bench) == "ok"]
    n = int(ok.duplicated([c for c in ("cell_key", "loop") if c in ok]).sum())
    if not n:
        return None
    return (f"**Note: {n} bench.csv row(s) repeat a measured cell** (same cell key and loop: two commands wrote the "
            f"file at once, or files were concatenated). Only the first row of each is used.")


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


def equal_label(r):
    """The shared setting, with the switches each framework had on by default ('torch onednn=on')."""
    if not isinstance(r["equal_torch_setting"], str):
        return "n/a"
    effect = [f"{name} {r[f'equal_{name}_in_effect']}" for name in ("torch", "paddle")
              if isinstance(r[f"equal_{name}_in_effect"], str) and r[f"equal_{name}_in_effect"]]
    return r["equal_torch_setting"] + (f" ({', '.join(effect)})" if effect else "")


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


# ---------------------------------------------------------------------------------------------
# The machine's noise (A/A pairs) and the second stage's decisions


def spread_label(value):
    """'±12.3%' for a per-pair spread in percent; n/a for fewer than 2 pairs."""
    return f"±{value:.1f}%" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def needed_label(value):
    """Pairs a +-3% CI needs: '79', '≥ 100,000' at timings.table.NEEDED_CAP, n/a without a spread."""
    if not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
        return "n/a"
    return f"≥ {NEEDED_CAP:,}" if value >= NEEDED_CAP else f"{int(value):,}"


def floor_sentence(floors, scope):
    """The noise floor of one suite, node and model pair (machine_floor rows), as the report states it."""
    def one(r):
        return fmt_ci(r["ratio"], r["ratio_lo"], r["ratio_hi"], ratio=True)
    rows = floors
    for column, value in zip(FLOOR_SCOPE, scope):
        rows = rows[rows[column].isna()] if pd.isna(value) else rows[rows[column] == value]
    by = {r["framework"]: r for _, r in rows.iterrows()}
    both = by["both"]
    where = [f"suite {scope[0]}"] + ([f"node {scope[2]}"] if isinstance(scope[2], str) else []) + \
        ([f"model pair {scope[3]}"] if isinstance(scope[3], str) and scope[3] else [])
    needed = pairs_for_spread(both["spread_pct"] / 100, int(both["df"]), TARGET) if both["df"] else None
    parts = "; ".join(f"{name} A/A {one(by[name])}, spread ±{by[name]['spread_pct']:.1f}%"
                      for name in ("torch", "paddle") if name in by)
    return (f"**Machine noise floor** ({', '.join(where)}; {int(both['pairs'])} A/A pairs on {both['tasks']}): on "
            f"this machine during this run, the same framework against itself gave a ratio of {one(both)}, a "
            f"per-pair spread of {both['spread_pct']:.1f} % ({parts})."
            + (f" At that spread a ratio CI within ±{TARGET:.0%} needs about {needed:,} pairs." if needed else ""))


def floor_sentences(floors):
    """floor_sentence of every suite, node and model pair of machine_floor's rows, in their order."""
    return [floor_sentence(floors, scope) for scope in floors[FLOOR_SCOPE].drop_duplicates().itertuples(index=False)]


def processes_label(row):
    """'10 (a and b in two processes in every pair)': the worker processes an A/A configuration ran in."""
    if not row["processes"]:
        return "not recorded"
    apart = "a and b in two processes in every pair" if row["two_processes"] else "a and b shared a process"
    return f"{row['processes']} ({apart})"


def aa_note(row):
    if row["bias"]:
        return "bias: the CI excludes 1, a harness or order effect, not noise"
    return "-"


def second_stage_notes(summary, decisions):
    """Per summary row, what the second stage did where its CI is wider than the target (second_stage.csv,
    the latest decision per configuration): no pairs at the machine's noise, no pairs because the planned
    ones do not fit, or fewer pairs than planned."""
    if decisions is None or not len(decisions) or not len(summary):
        return [""] * len(summary)
    keys = ["suite", "task", "batch_size", "stage", "pairing", "model_spec"]
    decisions = decisions.assign(model_spec=decisions["model_spec"].fillna("").astype(str))
    decisions = latest(decisions, keys)
    found = {tuple(fmt_key(v) for v in r[keys]): r for _, r in decisions.iterrows()}
    notes = []
    for _, row in summary.iterrows():
        spec = row["model_spec"] if isinstance(row["model_spec"], str) else ""
        d = found.get(tuple(fmt_key(v) for v in (row["suite"], row["task"], row["batch_size"], row["stage"],
                                                   row["pairing"], spec)))
        if d is None:
            notes.append("")
        elif d["decision"] == MACHINE_NOISE:
            notes.append(f"no second stage: needs {int(d['pairs_needed'])} pairs at the machine's noise; "
                         f"{int(d['pairs_fit'])} fit in the time left")
        elif d["decision"] == NO_FIT:
            above = (f", above the machine's ±{d['aa_spread_pct']:.1f}%" if pd.notna(d["aa_spread_pct"]) else "")
            notes.append(f"no second stage: {int(d['pairs_planned'])} pairs planned (spread ±{d['spread_pct']:.1f}%"
                         f"{above}); {int(d['pairs_fit'])} fit in the time left")
        elif row["pairs"] < d["pairs_planned"]:
            notes.append(f"second stage: {int(d['pairs_planned'])} pairs planned, {int(row['pairs'])} ran in the "
                         "time budget")
        else:
            notes.append("")
    return notes


def fmt_key(value):
    """A key part as text: 64, 64.0 and '64' alike (a batch size read back from a CSV)."""
    if isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return str(value)
