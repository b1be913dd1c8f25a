"""Summaries of bench.csv: throughput ratios per stage, tuning, inference latency, harness overhead and
time to target, as DataFrames (the report and the terminal format them). No torch, no paddle here.

How rows are paired: a configuration is every cell setting except the backend and the repeat. In the
equal and tune stages both backends share the setting (mode, precision, threads, knobs); in the best
stage each backend runs its own tuned winner, so the pairing key there is "each at its best" and each
side's setting is reported with it. Files written before stages existed read as the equal stage.
"""
import math

import numpy as np
import pandas as pd

from dualbench.timings.settings import pairing_label
from dualbench.timings.table import NEEDED_CAP, latest, measured, row_status
from dualbench.common.stats import (median_ci, paired_ratio_ci, pooled_spread, ratio_halfwidth,
                                    spread_and_pairs_needed, verdict)

OVERHEAD_TARGET = 0.97
TARGET = 0.03          # the CI half-width each configuration's "pairs for +-3%" is computed for
NOISE = "within machine noise"
# A configuration is measured on one node: pairs and ratios never mix the timings of two machines (a cluster
# bench keeps each configuration on one node; rows written before the node column read as one node).
CONFIG = ["suite", "device", "stage", "pairing", "batch_size", "dataset", "node", "model_spec"]
SPEED_LOOPS = ("engine", "bare")


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


def with_settings(bench):
    """bench rows with stage (empty: equal), knobs (empty: defaults), each row's readable setting, the
    pairing key (the shared setting; "each at its best" in the best stage) and the node."""
    bench = with_node(bench).copy()
    for column, default in (("stage", "equal"), ("knobs", ""), ("model_spec", ""), ("aa_side", "")):
        values = bench[column] if column in bench else pd.Series(default, index=bench.index, dtype=object)
        bench[column] = values.fillna(default).astype(str).replace("", default)
    bench["knobs"] = bench["knobs"].replace("nan", "")
    bench["setting"] = [pairing_label("equal", fmt_int(t), m, p, k) for t, m, p, k in
                        zip(bench["threads"], bench["mode"], bench["precision"], bench["knobs"])]
    bench["pairing"] = [pairing_label(stage, fmt_int(t), m, p, k) for stage, t, m, p, k in
                        zip(bench["stage"], bench["threads"], bench["mode"], bench["precision"], bench["knobs"])]
    return bench


def torch_paddle(bench):
    """The rows a torch/paddle number may use: every stage but the A/A pairs (a framework against itself)."""
    return bench[bench["stage"] != "aa"]


def fmt_int(value):
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return value


def problem_cells(bench):
    """Rows of cells that failed or diverged and have no ok row (a retried cell that then succeeded is
    measured, not a problem): the latest row per cell_key."""
    status = row_status(bench)
    bench = bench.assign(status=status, error=bench["error"] if "error" in bench else None)
    ok_keys = set(bench.loc[status == "ok", "cell_key"])
    bad = bench[(status != "ok") & ~bench["cell_key"].isin(ok_keys)]
    return latest(bad, ["cell_key"])


def _pairs(group, value):
    """{repeat: value} per backend, the latest row per (backend, repeat)."""
    group = latest(group, ["backend", "repeat"])
    return {b: g.set_index("repeat")[value] for b, g in group.groupby("backend")}


def _sides(group, name, column="setting"):
    """The setting a backend ran at in a configuration ('' when it has no rows)."""
    if column not in group:
        return ""
    values = list(dict.fromkeys(group.loc[group["backend"] == name, column].dropna().astype(str)))
    return "; ".join(v for v in values if v and v != "nan")


def primary_rows(frame):
    """The throughput rows of a configuration: the engine loop (native DataLoader), or the bare loop where
    there is no engine (a model pair: pre-loaded random batches)."""
    engine = frame[frame["loop"] == "engine"]
    return engine if len(engine) else frame[frame["loop"] == "bare"]


def speed_summary(bench, loop=None, floors=None):
    """Per task and configuration: throughput per backend (median over repeats, 95% CI), the paired
    ratio torch/paddle with its CI and verdict, the settings each side ran at, and per-step numbers.

    loop: None for each configuration's primary loop (engine, else bare), or a loop name. Tuning rows
    are left out (they choose the settings; tuning_summary has them). Only ok rows count;
    `<backend>_failed` / `<backend>_diverged` count the cells left out, and a configuration with no
    complete pair says which backend failed in its verdict. floors: noise_floor's, when the caller has
    them already (the report and the terminal also print them)."""
    rows = []
    bench = with_settings(bench)
    if floors is None:
        floors = machine_floor(aa_pairs(bench))
    bench = torch_paddle(bench)
    frame = bench[bench["loop"].isin(SPEED_LOOPS if loop is None else [loop]) & (bench["stage"] != "tune")]
    for keys, all_rows in frame.groupby(["task"] + CONFIG, sort=False, dropna=False):
        info = dict(zip(["task"] + CONFIG, keys))
        all_rows = primary_rows(all_rows) if loop is None else all_rows
        group, bad = measured(all_rows), problem_cells(all_rows)
        sps = _pairs(group, "samples_per_s")
        row = {**info, "loop": all_rows["loop"].iloc[0] if len(all_rows) else loop,
               **{c: _shared(all_rows, c) for c in ("mode", "precision", "threads", "knobs")},
               "torch_setting": _sides(all_rows, "torch"), "paddle_setting": _sides(all_rows, "paddle"),
               "torch_in_effect": _sides(all_rows, "torch", "knobs_in_effect"),
               "paddle_in_effect": _sides(all_rows, "paddle", "knobs_in_effect")}
        for name in ("torch", "paddle"):
            values = sps.get(name, pd.Series(dtype=float))
            med, lo, hi = median_ci(values.values)
            sub = latest(group[group["backend"] == name], ["repeat"])
            row.update({f"{name}_samples_per_s": med, f"{name}_lo": lo, f"{name}_hi": hi,
                        f"{name}_repeats": int(values.notna().sum())})
            for column in ("ms_per_step", "reader_share", "epoch_seconds", "peak_mem_mb", "first_step_s"):
                values_of = pd.to_numeric(sub[column], errors="coerce") if column in sub else pd.Series(dtype=float)
                row[f"{name}_{column}"] = float(values_of.median()) if len(sub) else math.nan
        row.update(ratio_fields(sps))
        row.update(noise_fields(sps, row, floor_of(floors, info)))
        row.update(problem_counts(bad))
        if not row["pairs"] and len(bad):
            row["verdict"] = f"n/a ({', '.join(sorted(set(bad['backend'] + ' ' + bad['status'])))})"
        rows.append(row)
    return pd.DataFrame(rows)


AA_CONFIG = ["task", "backend", "suite", "device", "batch_size", "setting", "dataset", "node", "model_spec"]
FLOOR_SCOPE = ["suite", "device", "node", "model_spec"]   # one noise floor per suite, node and model pair


def aa_pairs(bench):
    """The A/A pairs of `bench` (with_settings rows): per task, framework and configuration, the primary loop's
    samples/s of side a and side b by repeat, and each side's worker process ids by repeat."""
    frame = measured(bench[(bench["stage"] == "aa") & bench["loop"].isin(SPEED_LOOPS)])
    out = []
    for keys, group in frame.groupby(AA_CONFIG, sort=False, dropna=False):
        group = latest(primary_rows(group), ["aa_side", "repeat"])
        sides = {side: g.set_index("repeat") for side, g in group.groupby("aa_side")}
        if set(sides) != {"a", "b"}:
            continue
        common = sorted(set(sides["a"].index) & set(sides["b"].index))
        pids = {side: (pd.to_numeric(sides[side]["worker_pid"], errors="coerce")[common] if "worker_pid" in group
                       else pd.Series(math.nan, index=common)) for side in "ab"}
        out.append({**dict(zip(AA_CONFIG, keys)), "loop": group["loop"].iloc[0],
                    "a": sides["a"].loc[common, "samples_per_s"].to_numpy(float),
                    "b": sides["b"].loc[common, "samples_per_s"].to_numpy(float), "pids": pids})
    return out


def aa_summary(pairs):
    """One row per A/A configuration (aa_pairs): the ratio side a / side b with its CI, the per-pair spread
    (100 x SD of the log ratios), the pairs a +-3% CI would need at that spread, the worker processes, and
    `bias`: the CI excludes 1, a harness or order effect rather than noise (the sides differ only in which
    process ran them, and which ran first alternates)."""
    rows = []
    for pair in pairs:
        ci = paired_ratio_ci(pair["a"], pair["b"])
        spread, needed = spread_and_pairs_needed(pair["a"], pair["b"], TARGET, NEEDED_CAP)
        a_pids, b_pids = pair["pids"]["a"], pair["pids"]["b"]
        known = a_pids.notna() & b_pids.notna()
        rows.append({**{k: pair[k] for k in AA_CONFIG + ["loop"]}, "ratio": ci["ratio"], "ratio_lo": ci["lo"],
                     "ratio_hi": ci["hi"], "pairs": ci["n"], "spread_pct": 100 * spread, "pairs_for_3pct": needed,
                     "a_samples_per_s": float(np.median(pair["a"])), "b_samples_per_s": float(np.median(pair["b"])),
                     "processes": int(pd.concat([a_pids, b_pids]).nunique()),
                     "two_processes": bool(known.any() and (a_pids[known] != b_pids[known]).all()),
                     "bias": bool(ci["n"] >= 2 and (ci["lo"] > 1 or ci["hi"] < 1))})
    return pd.DataFrame(rows)


def noise_floor(bench):
    """(aa, floors): aa_summary and machine_floor of bench's A/A pairs (empty frames without them)."""
    pairs = aa_pairs(with_settings(bench))
    return aa_summary(pairs), machine_floor(pairs)


def machine_floor(pairs):
    """The machine's noise floor per suite, node and model pair (FLOOR_SCOPE), for torch A/A, paddle A/A and
    both together ("both"): the geometric mean ratio a/b over all their A/A pairs with its paired t CI, and
    the per-pair spread pooled over the A/A configurations (each around its own mean; common.stats)."""
    rows = []
    scopes = {}
    for pair in pairs:
        scope = tuple(None if pd.isna(pair[k]) else pair[k] for k in FLOOR_SCOPE)   # one key for every NaN
        scopes.setdefault(scope, []).append(pair)
    for scope, members in scopes.items():
        for framework in ["torch", "paddle", "both"]:
            chosen = [m for m in members if framework in ("both", m["backend"])]
            if not chosen:
                continue
            ci = paired_ratio_ci(np.concatenate([m["a"] for m in chosen]), np.concatenate([m["b"] for m in chosen]))
            spread, df = pooled_spread([np.log(m["a"]) - np.log(m["b"]) for m in chosen])
            rows.append({**dict(zip(FLOOR_SCOPE, scope)), "framework": framework, "ratio": ci["ratio"],
                         "ratio_lo": ci["lo"], "ratio_hi": ci["hi"], "pairs": ci["n"], "spread_pct": 100 * spread,
                         "df": df, "tasks": ", ".join(dict.fromkeys(m["task"] for m in chosen))})
    return pd.DataFrame(rows)


def floor_of(floors, info):
    """The combined ("both") floor row of a configuration's suite, node and model pair, or None."""
    if not len(floors):
        return None
    same = floors["framework"] == "both"
    for column in FLOOR_SCOPE:
        value = info.get(column)
        same &= floors[column].isna() if pd.isna(value) else floors[column] == value
    return floors[same].iloc[0] if same.any() else None


def _shared(frame, column):
    """The column's value when both backends share it, else NaN (the best stage's per-side settings)."""
    values = frame[column].dropna().unique() if column in frame else []
    return values[0] if len(values) == 1 else math.nan


def ratio_fields(values, invert=False):
    """Paired ratio torch/paddle over common repeats with CI and verdict. invert: the values are times
    (lower is faster), so the verdict reads the inverse ratio and still says whether torch is faster."""
    t, p = values.get("torch", pd.Series(dtype=float)), values.get("paddle", pd.Series(dtype=float))
    common = sorted(set(t.index) & set(p.index))
    ratio = paired_ratio_ci(t[common].values, p[common].values) if common else paired_ratio_ci([], [])
    lo, hi = ratio["lo"], ratio["hi"]
    says = verdict(1 / hi, 1 / lo) if invert and math.isfinite(lo) and lo > 0 else verdict(lo, hi)
    return {"ratio": ratio["ratio"], "ratio_lo": lo, "ratio_hi": hi, "pairs": ratio["n"],
            "ratio_ci_pct": 100 * ratio_halfwidth(ratio["ratio"], lo, hi), "verdict": says}


def noise_fields(values, ratio, floor):
    """A configuration against the machine's noise: its per-pair spread (100 x SD of the log ratios), the
    pairs a +-3% CI needs at that spread, and the label "within machine noise" when its ratio CI overlaps
    the A/A ratio's CI of the same suite and node (`floor`, a machine_floor row; None: no A/A pairs)."""
    t, p = values.get("torch", pd.Series(dtype=float)), values.get("paddle", pd.Series(dtype=float))
    common = sorted(set(t.index) & set(p.index))
    spread, needed = spread_and_pairs_needed(t[common].to_numpy(float), p[common].to_numpy(float), TARGET, NEEDED_CAP)
    noise = (floor is not None and math.isfinite(ratio["ratio_lo"]) and math.isfinite(floor["ratio_lo"])
             and ratio["ratio_lo"] <= floor["ratio_hi"] and ratio["ratio_hi"] >= floor["ratio_lo"])
    return {"spread_pct": 100 * spread, "pairs_for_3pct": needed, "machine_noise": NOISE if noise else ""}


def problem_counts(bad):
    return {f"{name}_{status}": int(((bad["backend"] == name) & (bad["status"] == status)).sum())
            for name in ("torch", "paddle") for status in ("failed", "diverged")}


def stage_ratios(summary, overhead=None):
    """The headline: per task and batch size, the ratio at equal settings (default knobs, the first
    thread count measured) and with each framework at its best (its chosen settings), each with its CI
    and its machine-noise label; a ratio is labelled input-pipeline-bound when a side's engine reaches
    < 0.97 of its bare loop."""
    if summary is None or not len(summary):
        return pd.DataFrame()
    rows = []
    for (task, batch, node, _), group in summary.groupby(["task", "batch_size", "node", "model_spec"], sort=False,
                                                         dropna=False):
        equal = group[(group["stage"] == "equal") & group["knobs"].fillna("").eq("")]
        best = group[group["stage"] == "best"]
        row = {"task": task, "batch_size": batch, "node": node, "model_spec": group["model_spec"].iloc[0]}
        for label, sub in (("equal", equal), ("best", best)):
            first = sub.iloc[0] if len(sub) else None
            for field in ("ratio", "ratio_lo", "ratio_hi", "verdict", "pairs", "torch_samples_per_s",
                          "paddle_samples_per_s", "torch_setting", "paddle_setting", "torch_in_effect",
                          "paddle_in_effect", "machine_noise", "spread_pct", "pairs_for_3pct"):
                row[f"{label}_{field}"] = first[field] if first is not None else math.nan
            row[f"{label}_bound"] = pipeline_bound(overhead, task, sub) if first is not None else ""
        rows.append(row)
    return pd.DataFrame(rows)


def pipeline_bound(overhead, task, summary_rows):
    """'paddle 0.462' (engine samples/s ÷ bare samples/s) for each side whose engine loop ran below OVERHEAD_TARGET of its bare
    loop in these configurations: that ratio measures the input pipeline more than the model."""
    if overhead is None or not len(overhead) or not len(summary_rows):
        return ""
    row = summary_rows.iloc[0]
    same = overhead[(overhead["task"] == task) & (overhead["stage"] == row["stage"])
                    & (overhead["pairing"] == row["pairing"]) & (overhead["batch_size"] == row["batch_size"])
                    & (overhead["node"].fillna("").astype(str) == ("" if pd.isna(row["node"]) else str(row["node"])))]
    notes = [f"{r['backend']} {r['end_to_end']:.3f}" for _, r in same.iterrows()
             if math.isfinite(r["end_to_end"]) and r["end_to_end"] < OVERHEAD_TARGET]
    return "; ".join(notes)


def overhead_summary(bench):
    """Harness overhead per task, backend and configuration, paired by repeat (same worker process):
    end_to_end = engine samples/s / bare samples/s; compute = bare ms/step / engine compute ms/step
    (the engine's step time without the reader's)."""
    rows = []
    bench = measured(torch_paddle(with_settings(bench)))
    frame = bench[bench["loop"].isin(SPEED_LOOPS) & (bench["stage"] != "tune")]
    for keys, group in frame.groupby(["task", "backend"] + CONFIG, sort=False, dropna=False):
        group = latest(group, ["loop", "repeat"])
        engine, bare = (group[group["loop"] == loop].set_index("repeat") for loop in SPEED_LOOPS)
        common = sorted(set(engine.index) & set(bare.index))
        if not common:
            continue
        e2e = paired_ratio_ci(engine.loc[common, "samples_per_s"].values, bare.loc[common, "samples_per_s"].values)
        compute = paired_ratio_ci(bare.loc[common, "ms_per_step"].values,
                                  engine.loc[common, "compute_ms_per_step"].values)
        rows.append({**dict(zip(["task", "backend"] + CONFIG, keys)), "setting": group["setting"].iloc[0],
                     "end_to_end": e2e["ratio"], "end_to_end_lo": e2e["lo"], "end_to_end_hi": e2e["hi"],
                     "compute": compute["ratio"], "compute_lo": compute["lo"], "compute_hi": compute["hi"],
                     "reader_share": float(engine.loc[common, "reader_share"].median()), "pairs": e2e["n"]})
    return pd.DataFrame(rows)


def tuning_summary(bench):
    """Every tuning candidate per task and backend: its samples/s (one tuning cell), whether it won, and
    its speed relative to the framework's default knobs at the same threads (the untuned baseline)."""
    bench = with_settings(bench)
    frame = measured(bench[bench["stage"] == "tune"])
    rows = []
    for (task, backend), group in frame.groupby(["task", "backend"], sort=False):
        group = latest(group, ["setting"])
        sps = pd.to_numeric(group["samples_per_s"], errors="coerce")
        best = sps.idxmax() if sps.notna().any() else None
        for index, r in group.iterrows():
            rows.append({"task": task, "backend": backend, "workload": "train" if r["loop"] != "infer" else "infer",
                         "batch_size": r["batch_size"], "setting": r["setting"], "threads": fmt_int(r["threads"]),
                         "mode": r["mode"], "knobs": r["knobs"], "samples_per_s": float(sps[index]),
                         "chosen": index == best})
    table = pd.DataFrame(rows)
    if len(table):
        table["vs_fastest"] = table["samples_per_s"] / table.groupby(["task", "backend"])["samples_per_s"].transform("max")
    return table


def infer_summary(bench):
    """Inference latency per task, batch size and stage: per backend the median latency over repeats (each
    repeat's own median over its calls) with a 95% CI, the median p95, and the paired latency ratio
    torch/paddle (below 1: torch answers faster)."""
    bench = torch_paddle(with_settings(bench))
    frame = bench[(bench["loop"] == "infer") & (bench["stage"] != "tune")]
    rows = []
    for keys, all_rows in frame.groupby(["task"] + CONFIG, sort=False, dropna=False):
        group, bad = measured(all_rows), problem_cells(all_rows)
        latency = _pairs(group, "latency_ms")
        row = {**dict(zip(["task"] + CONFIG, keys)), "torch_setting": _sides(all_rows, "torch"),
               "paddle_setting": _sides(all_rows, "paddle")}
        for name in ("torch", "paddle"):
            values = latency.get(name, pd.Series(dtype=float))
            med, lo, hi = median_ci(values.values)
            sub = latest(group[group["backend"] == name], ["repeat"])
            p95 = pd.to_numeric(sub["p95_ms"], errors="coerce") if "p95_ms" in sub else pd.Series(dtype=float)
            p95_ci = median_ci(p95.values)
            row.update({f"{name}_latency_ms": med, f"{name}_lo": lo, f"{name}_hi": hi,
                        f"{name}_p95_ms": p95_ci[0], f"{name}_p95_lo": p95_ci[1], f"{name}_p95_hi": p95_ci[2],
                        f"{name}_calls": int(pd.to_numeric(sub.get("infer_calls"), errors="coerce").median())
                        if len(sub) and "infer_calls" in sub else 0})
        row.update(ratio_fields(latency, invert=True))
        row.update(problem_counts(bad))
        rows.append(row)
    return pd.DataFrame(rows)


def ttt_summary(bench):
    """Time to target per task and configuration, ok rows only; `<backend>_reached` says how many
    repeats reached the target, and how many failed or diverged (those have no time)."""
    bench = torch_paddle(with_settings(bench))
    frame = bench[bench["loop"] == "ttt"]
    rows = []
    for keys, all_rows in frame.groupby(["task"] + CONFIG, sort=False, dropna=False):
        group, bad = measured(all_rows), problem_cells(all_rows)
        row = {**dict(zip(["task"] + CONFIG, keys)), "torch_setting": _sides(all_rows, "torch"),
               "paddle_setting": _sides(all_rows, "paddle")}
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
