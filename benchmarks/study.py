"""`dualbench study NAME`: run one of the seed notes' studies in both frameworks and write its section.

Every cell goes through `dualbench run` (one worker process per cell, resume by cell key, failed and
diverged cells recorded), into OUT/NAME/runs.csv. Then the study's section is rebuilt from that CSV
alone: OUT/NAME/study.md with tables, claim checks and plots, OUT/NAME/summary.csv and claims.csv,
and OUT/index.md linking every study present. The definitions live in common/studies.py.
"""
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from dualbench.common.errors import UserError
from dualbench.common.stats import compare_means, holm, mean_ci

PLOTS = "plots"
ARM_COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
              "#1f78b4", "#b15928"]
BACKEND_STYLE = {"torch": "-", "paddle": "--"}


# ---------------------------------------------------------------------------------------------
# Running


def resolve_dataset(plan, data_path=None):
    """(dataset actually used, why) — the plan's dataset when present, else its labelled fallback."""
    from dualbench.common.data.sources import get_info, locate, missing_message
    info = get_info(plan.dataset)
    if info.synthetic or locate(plan.dataset, data_path) is not None:
        return plan.dataset, ""
    if plan.fallback:
        return plan.fallback, f"{plan.dataset} is not on this machine ({missing_message(plan.dataset)}); " \
                              f"running on {plan.fallback} instead"
    raise UserError(missing_message(plan.dataset))


def select_plans(study, datasets):
    if not datasets:
        return list(study.data)
    wanted = [d.strip() for d in datasets.split(",") if d.strip()]
    known = {p.dataset for p in study.data}
    unknown = [d for d in wanted if d not in known]
    if unknown:
        raise UserError(f"study '{study.name}' has no dataset {', '.join(unknown)} (it has: {', '.join(sorted(known))})")
    return [p for p in study.data if p.dataset in wanted]


def run_study(study, backend_names, out_root, datasets=None, seeds=None, threads=None, progress=True, executor=None):
    """Run every arm x dataset x seed x backend cell (finished cells are skipped); returns the failed cells.

    All cells of the study go to the executor at once: one after the other on this machine, or spread over
    a Ray cluster (`--executor ray`) without waiting for one arm to finish before the next starts."""
    from dualbench.engine import new_run_id
    from dualbench.run import plan_cells, print_summary, run_cells
    from dualbench.common.tasks import get_task
    out = Path(out_root) / study.name
    plans = select_plans(study, datasets)
    jobs = [(plan, arm) for plan in plans for arm in study.arms]
    run_id, cells = new_run_id(), []
    for i, (plan, arm) in enumerate(jobs, start=1):
        dataset, why = resolve_dataset(plan)
        if why:
            print(f"dualbench study: {why}", file=sys.stderr)
        epochs = arm.epochs or plan.epochs
        print(f"[{study.name} {i}/{len(jobs)}] {arm.label} on {dataset}", file=sys.stderr)
        cells += plan_cells([get_task(arm.task)], backend_names, list(seeds or plan.seeds), out, run_id,
                            epochs=epochs, dataset=dataset, limit_train=plan.limit_train, init=arm.init,
                            threads=threads, progress=progress)
    finals, failures = run_cells(cells, out / "runs.csv", executor)   # failed cells: 'failed' rows, the study goes on
    print_summary(finals, out / "runs.csv")
    return failures


# ---------------------------------------------------------------------------------------------
# Analysis (from runs.csv alone)


def arm_rows(runs, study, arm, plan):
    """All epoch rows of one arm on one plan's dataset (or its fallback), latest run per seed/backend."""
    from dualbench.common.tasks import get_task
    epochs = arm.epochs or plan.epochs or get_task(arm.task).protocol.epochs
    datasets = {plan.dataset, plan.fallback} - {None}
    mine = runs[(runs["task"] == arm.task) & runs["dataset"].isin(datasets) & (runs["epochs_planned"] == epochs)
                & (runs["init"].fillna("own") == arm.init)]
    if not len(mine):
        return mine
    last = mine.sort_values("timestamp", kind="stable").drop_duplicates(["backend", "seed"], keep="last")
    return mine.merge(last[["backend", "seed", "run_id"]], on=["backend", "seed", "run_id"])


def outcomes(rows):
    """One row per (backend, seed): the run's last row, with its final status."""
    if not len(rows):
        return rows
    return rows.sort_values(["epoch"], kind="stable").drop_duplicates(["backend", "seed"], keep="last")


def is_synthetic(rows):
    return bool(rows["synthetic"].astype(str).str.lower().eq("true").any()) if len(rows) else False


def runs_per_arm(runs, study):
    """(plan, arm, its rows) for every arm and dataset that has rows."""
    for plan in study.data:
        for arm in study.arms:
            rows = arm_rows(runs, study, arm, plan)
            if len(rows):
                yield plan, arm, rows


def summarise(runs, study):
    """summary.csv: per arm, dataset and backend — seeds, statuses, accuracies, gradients, time."""
    records = []
    for plan, arm, rows in runs_per_arm(runs, study):
        ends = outcomes(rows)
        for backend in [b for b in ("torch", "paddle") if (ends["backend"] == b).any()]:
            end = ends[ends["backend"] == backend]
            ok = end[end["test_acc"].notna()]
            acc, lo, hi = mean_ci(ok["test_acc"])
            first = rows[(rows["backend"] == backend) & (rows["epoch"] == 1)]
            records.append({
                "study": study.name, "arm": arm.label, "task": arm.task, "dataset": end["dataset"].iloc[0],
                "synthetic": is_synthetic(end), "backend": backend, "n_train": int(end["n_train"].iloc[0]),
                "epochs_planned": int(end["epochs_planned"].iloc[0]),
                "seeds": len(end), "ok": len(ok), "diverged": int((end["status"] == "diverged").sum()),
                "failed": int((end["status"] == "failed").sum()),
                "early_stopped": int((end["status"] == "early_stopped").sum()),
                "test_acc": acc, "test_acc_lo": lo, "test_acc_hi": hi,
                "test_acc_sd": float(ok["test_acc"].std(ddof=1)) if len(ok) > 1 else math.nan,
                "final_train_acc": float(ok["final_train_acc"].mean()) if len(ok) else math.nan,
                "best_val_acc": float(rows[rows["backend"] == backend].groupby("seed")["val_acc"].max().mean()),
                "epochs_run": float(end["epoch"].mean()),
                "final_lr": float(end["lr"].mean()),
                "output_grad_init": float(first["output_grad_init"].mean()) if len(first) else math.nan,
                "output_grad_epoch1": float(first["output_grad"].mean()) if len(first) else math.nan,
                "train_seconds": float(rows[rows["backend"] == backend]["epoch_seconds"].sum()),
                "threads": int(end["threads"].iloc[0]),
                "framework_version": str(end["framework_version"].iloc[0]),
            })
    return pd.DataFrame(records)


def _accs(runs, study, label, plan, backend):
    """{seed: test_acc} of the ok runs, and the count of diverged seeds."""
    from dualbench.common.studies import arm_by_label
    end = outcomes(arm_rows(runs, study, arm_by_label(study, label), plan))
    if not len(end):
        return pd.Series(dtype=float), 0
    end = end[end["backend"] == backend]
    ok = end[end["test_acc"].notna()]
    return ok.set_index("seed")["test_acc"], int((end["status"] == "diverged").sum())


def claim_verdict(comparison, cmp, diverged_better, diverged_worse, synthetic):
    if synthetic:
        return "no claim (synthetic data)"
    if diverged_worse > cmp["n_b"] and cmp["n_a"] and not diverged_better and (
            cmp["n_b"] == 0 or cmp["diff"] > 0):
        seeds = diverged_worse + cmp["n_b"]
        return (f"holds: '{comparison.worse}' diverged in " +
                ("every seed" if not cmp["n_b"] else f"{diverged_worse} of {seeds} seeds and the rest scored lower"))
    p = cmp["p_holm"]
    if not math.isfinite(p):
        return "untestable (too few runs)"
    if comparison.two_sided:
        if p >= 0.05:
            return "no significant difference"
        return "higher" if cmp["diff"] > 0 else "lower"
    if p < 0.05:
        return "holds" if cmp["diff"] > 0 else "contradicted"
    return "not shown"


CLAIM_COLUMNS = ["claim", "dataset", "synthetic", "backend", "a", "b", "acc_a", "acc_b", "n_a", "n_b", "diverged_a",
                 "diverged_b", "diff", "diff_lo", "diff_hi", "p_welch", "p", "p_holm", "verdict"]
BACKEND_COLUMNS = ["arm", "dataset", "synthetic", "torch", "paddle", "diff", "diff_lo", "diff_hi", "p_welch",
                   "p_paired", "p_holm"]


def check_claims(runs, study):
    """claims.csv: every comparison, per dataset and backend: difference, Welch CI, p (raw and Holm)."""
    records = []
    for plan in study.data:
        rows = arm_rows(runs, study, study.arms[0], plan)   # for the dataset actually used and its label
        dataset = rows["dataset"].iloc[0] if len(rows) else plan.dataset
        synthetic = is_synthetic(rows)
        for comparison in study.comparisons:
            for backend in ("torch", "paddle"):
                better, div_a = _accs(runs, study, comparison.better, plan, backend)
                worse, div_b = _accs(runs, study, comparison.worse, plan, backend)
                if not (len(better) or len(worse) or div_a or div_b):
                    continue
                seeds = sorted(set(better.index) & set(worse.index))
                cmp = compare_means(better.values, worse.values, pairs=[(better[s], worse[s]) for s in seeds])
                records.append({"claim": comparison.claim, "dataset": dataset, "synthetic": synthetic,
                                "backend": backend, "a": comparison.better,
                                "b": comparison.worse, "acc_a": float(better.mean()) if len(better) else math.nan,
                                "acc_b": float(worse.mean()) if len(worse) else math.nan, "n_a": cmp["n_a"],
                                "n_b": cmp["n_b"], "diverged_a": div_a, "diverged_b": div_b,
                                "diff": cmp["diff"], "diff_lo": cmp["lo"], "diff_hi": cmp["hi"],
                                "p_welch": cmp["p_welch"],
                                "_comparison": comparison})
    frame = pd.DataFrame(records, columns=CLAIM_COLUMNS[:-3] + ["_comparison"])
    if not len(frame):
        return pd.DataFrame(columns=CLAIM_COLUMNS)   # an empty table still has its header (pandas can read it)
    # two-sided Welch p (so that a claim can also be contradicted), Holm-adjusted over the whole study
    frame["p"] = frame["p_welch"]
    frame["p_holm"] = holm(frame["p_welch"].to_numpy(float))
    frame["verdict"] = [claim_verdict(r["_comparison"], r, r["diverged_a"], r["diverged_b"], r["synthetic"])
                        for _, r in frame.iterrows()]
    return frame.drop(columns=["_comparison"])


def backend_differences(runs, study):
    """torch vs paddle per arm and dataset: Welch and paired-by-seed tests on test accuracy."""
    records = []
    for plan, arm, rows in runs_per_arm(runs, study):
        by = {b: g[g["test_acc"].notna()].set_index("seed")["test_acc"] for b, g in outcomes(rows).groupby("backend")}
        t, p = by.get("torch", pd.Series(dtype=float)), by.get("paddle", pd.Series(dtype=float))
        seeds = sorted(set(t.index) & set(p.index))
        cmp = compare_means(t.values, p.values, pairs=[(t[s], p[s]) for s in seeds])
        records.append({"arm": arm.label, "dataset": rows["dataset"].iloc[0], "synthetic": is_synthetic(rows),
                        "torch": float(t.mean()) if len(t) else math.nan,
                        "paddle": float(p.mean()) if len(p) else math.nan,
                        "diff": cmp["diff"], "diff_lo": cmp["lo"], "diff_hi": cmp["hi"],
                        "p_welch": cmp["p_welch"], "p_paired": cmp["p_paired"]})
    frame = pd.DataFrame(records, columns=BACKEND_COLUMNS[:-1])
    frame["p_holm"] = holm(frame["p_welch"].to_numpy(float)) if len(frame) else []
    return frame


# ---------------------------------------------------------------------------------------------
# Plots


def plot_study(runs, study, plan, path):
    """Per-epoch accuracy curves (val if the task has a split, else train; mean over seeds) for every arm
    and backend, beside test accuracy bars with 95% CIs."""
    from dualbench.report import _pyplot, save_figure
    plt = _pyplot()
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


# ---------------------------------------------------------------------------------------------
# The section


def _acc_cell(row):
    if row["ok"] == 0:
        return "—"
    half = (row["test_acc_hi"] - row["test_acc_lo"]) / 2
    return f"{row['test_acc']:.4f} ± {half:.4f}" if math.isfinite(half) else f"{row['test_acc']:.4f}"


def _status_cell(row):
    parts = [f"{row['ok']}/{row['seeds']} ok"]
    for key in ("diverged", "failed", "early_stopped"):
        if row[key]:
            parts.append(f"{row[key]} {key.replace('_', '-')}")
    return ", ".join(parts)


def _fmt(value, digits=4):
    from dualbench.report import fmt
    return fmt(value, digits)


def summary_markdown(summary):
    from dualbench.report import markdown_table
    table = pd.DataFrame({
        "arm": summary["arm"], "backend": summary["backend"], "runs": summary.apply(_status_cell, axis=1),
        "test acc (mean ± 95% CI)": summary.apply(_acc_cell, axis=1),
        "sd": summary["test_acc_sd"].map(_fmt), "train acc (eval)": summary["final_train_acc"].map(_fmt),
        "best val acc": summary["best_val_acc"].map(_fmt), "epochs run": summary["epochs_run"].map(_fmt),
        "final lr": summary["final_lr"].map(lambda v: f"{v:g}" if math.isfinite(v) else "n/a"),
        "train s": summary["train_seconds"].map(lambda v: f"{v:.0f}"),
    })
    return markdown_table(table)


def claims_markdown(claims):
    from dualbench.report import markdown_table
    table = pd.DataFrame({
        "claim": claims["claim"], "backend": claims["backend"],
        "a − b test acc [95% CI]": [f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]" if math.isfinite(lo) else
                                     (f"{d:+.4f}" if math.isfinite(d) else "n/a")
                                     for d, lo, hi in zip(claims["diff"], claims["diff_lo"], claims["diff_hi"])],
        "n (a, b)": [f"{a}, {b}" + (f" (+{da}, +{db} diverged)" if da or db else "")
                     for a, b, da, db in zip(claims["n_a"], claims["n_b"], claims["diverged_a"], claims["diverged_b"])],
        "p": claims["p"].map(_fmt), "p Holm": claims["p_holm"].map(_fmt), "verdict": claims["verdict"],
    })
    return markdown_table(table)


def backends_markdown(diffs):
    from dualbench.report import markdown_table
    table = pd.DataFrame({
        "arm": diffs["arm"], "torch": diffs["torch"].map(_fmt), "paddle": diffs["paddle"].map(_fmt),
        "torch − paddle [95% CI]": [f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]" if math.isfinite(lo) else _fmt(d)
                                    for d, lo, hi in zip(diffs["diff"], diffs["diff_lo"], diffs["diff_hi"])],
        "p Welch": diffs["p_welch"].map(_fmt), "p paired": diffs["p_paired"].map(_fmt),
        "p Holm": diffs["p_holm"].map(_fmt),
        "differ at 5% (Holm)?": ["n/a" if not math.isfinite(p) else ("yes" if p < 0.05 else "no") for p in diffs["p_holm"]],
    })
    return markdown_table(table)


def gradient_markdown(summary):
    from dualbench.report import markdown_table
    table = summary[["arm", "backend", "output_grad_init", "output_grad_epoch1"]].copy()
    for col in ("output_grad_init", "output_grad_epoch1"):
        table[col] = table[col].map(lambda v: f"{v:.4g}" if math.isfinite(v) else "n/a")
    table.columns = ["arm", "backend", "‖∂loss/∂logits‖ per sample, at init", "after epoch 1"]
    return markdown_table(table)


def reference_markdown(study, summary):
    from dualbench.report import markdown_table
    from dualbench.common.tasks import count_parameters, get_task
    rows = []
    for label, text in study.references:
        mine = summary[summary["arm"] == label]
        for _, r in mine.iterrows():
            rows.append({"arm": label, "parameters": count_parameters(get_task(r["task"]).model),
                         "seed note reports": text, "backend": r["backend"],
                         "data": r["dataset"] + (" (synthetic)" if r["synthetic"] else ""),
                         "train acc (eval)": _fmt(r["final_train_acc"]), "test acc": _fmt(r["test_acc"])})
    return markdown_table(pd.DataFrame(rows))


def parameter_markdown(study):
    from dualbench.report import markdown_table
    from dualbench.common.tasks import count_parameters, get_task
    rows = []
    for task in dict.fromkeys(arm.task for arm in study.arms):
        t = get_task(task)
        rows.append({"task": task, "model": t.model.name, "parameters": f"{count_parameters(t.model):,}",
                     "loss": t.loss, "optimizer": f"{t.protocol.optimizer.name} {t.protocol.optimizer.lr:g}",
                     "batch": t.protocol.batch_size, "epochs (protocol)": t.protocol.epochs})
    return markdown_table(pd.DataFrame(rows))


def build_section(study, out_root):
    """Write OUT/NAME/study.md, summary.csv, claims.csv, backends.csv and plots; returns study.md's path."""
    from dualbench.report import markdown_table, read_optional, safe_name
    from dualbench.common.fsutil import atomic_write_text
    from dualbench.common.results import RUN_COLUMNS, read_csv, write_table
    folder = Path(out_root) / study.name
    csv_path = folder / "runs.csv"
    if read_optional(csv_path) is None:
        raise UserError(f"{csv_path}: no runs yet; run `dualbench study {study.name}` first")
    runs = read_csv(csv_path, RUN_COLUMNS)
    summary, claims, diffs = summarise(runs, study), check_claims(runs, study), backend_differences(runs, study)
    write_table(folder / "summary.csv", summary)
    write_table(folder / "claims.csv", claims)
    write_table(folder / "backends.csv", diffs)
    lines = [f"# Study `{study.name}`: {study.title}", "",
             f"Seed note(s) {study.seed_notes}. Rebuilt by `dualbench study {study.name}` from "
             f"[runs.csv](runs.csv) alone; every number below is a measurement of this suite.", ""]
    if study.notes:
        lines += [study.notes, ""]
    lines += ["## Tasks", "", parameter_markdown(study)]
    for plan in study.data:
        rows = pd.concat([arm_rows(runs, study, arm, plan) for arm in study.arms])
        if not len(rows):
            continue
        dataset = rows["dataset"].iloc[0]
        synthetic = is_synthetic(rows)
        lines += [f"## Data: {dataset}" + (" (SYNTHETIC — not an accuracy claim)" if synthetic else ""), "",
                  plan.why, ""]
        if dataset != plan.dataset:
            lines += [f"**{plan.dataset} is not on this machine; these runs use {dataset}.**", ""]
        lines += [f"Training images: {', '.join(str(n) for n in sorted(rows['n_train'].dropna().astype(int).unique()))}; "
                  f"test images: {int(rows['n_test'].dropna().iloc[0])}; threads per framework: "
                  f"{', '.join(str(t) for t in sorted(rows['threads'].dropna().astype(int).unique()))}; "
                  f"versions: {', '.join(sorted(rows['framework_version'].dropna().astype(str).unique()))}; "
                  f"data sha256 {str(rows['dataset_sha256'].iloc[0])[:16]}…", ""]
        mine = summary[summary["dataset"] == dataset]
        lines += ["### Test accuracy per arm and backend", "", summary_markdown(mine)]
        plot = f"{PLOTS}/{safe_name(study.name)}-{safe_name(dataset)}.png"
        plot_study(runs, study, plan, folder / plot)
        lines += [f"![{study.name} on {dataset}]({plot})", ""]
        if len(claims):
            lines += ["### Claims", "", claims_markdown(claims[claims["dataset"] == dataset])]
        if len(diffs):
            lines += ["### torch vs paddle", "", backends_markdown(diffs[diffs["dataset"] == dataset])]
        if study.gradient_table:
            lines += ["### Gradient at the logits (seed 000's explanation)", "", gradient_markdown(mine)]
    if study.references:
        lines += ["## Next to the seed note's numbers", "", reference_markdown(study, summary)]
    problems = runs[runs["status"].isin(["failed", "diverged"])]
    if len(problems):
        table = problems[["task", "dataset", "backend", "seed", "status", "epoch", "diverged_step",
                          "last_finite_loss", "error"]]
        lines += ["## Diverged and failed runs", "",
                  "Diverged runs stop at the first non-finite loss or weight; they have no test accuracy and are "
                  "left out of the means (counted in the `runs` column).", "", markdown_table(table.fillna("—"))]
    lines += ["## Statistics", "",
              "Test accuracy: mean over seeds with a Student-t 95% CI. Claims: two-sided Welch t-test over "
              "seeds, p-values Holm-adjusted over every comparison of the study; a directional claim holds "
              "when the difference has the claimed sign and p (Holm) < 0.05, and is contradicted when it is "
              "significant the other way. torch vs paddle: Welch and paired "
              "by seed (same batch order), Holm over the arms. Diverged seeds are reported, not averaged.", ""]
    path = folder / "study.md"
    atomic_write_text(path, "\n".join(lines))
    write_index(out_root)
    return path


def write_index(out_root):
    from dualbench.common.fsutil import atomic_write_text
    from dualbench.common.studies import STUDIES
    out_root = Path(out_root)
    lines = ["# Studies", "", "Each section is rebuilt by `dualbench study NAME` from its own runs.csv.", ""]
    for name, study in STUDIES.items():
        if (out_root / name / "study.md").exists():
            lines.append(f"- [{name}]({name}/study.md): {study.title} (seed {study.seed_notes})")
    atomic_write_text(out_root / "index.md", "\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------
# CLI


def cmd_study(args):
    from dualbench import backends
    from dualbench.executor import from_args, session
    from dualbench.run import parse_seeds
    from dualbench.common.studies import STUDIES, get_study
    if args.name == "list":
        for study in STUDIES.values():
            data = ", ".join(p.dataset + (f" (else {p.fallback})" if p.fallback else "") for p in study.data)
            print(f"{study.name:20s} {study.title} — {len(study.arms)} arms on {data}")
        return
    executor = from_args(args)   # first: asking for Ray without it installed is a one-line error
    study = get_study(args.name)
    seeds = parse_seeds(args.seeds) if args.seeds else None
    failures = 0
    if not args.report_only:
        names = backends.parse_backends(args.backend)
        with session(executor):
            failures = run_study(study, names, args.out, args.datasets, seeds, args.threads, not args.no_progress,
                                 executor)
    path = build_section(study, args.out)
    print(f"study section written to {path}")
    if failures:
        print(f"dualbench study: {failures} cell(s) failed (status 'failed' in "
              f"{Path(args.out) / study.name / 'runs.csv'}); rerun the same command to retry them", file=sys.stderr)
        raise SystemExit(1)


def register(subparsers):
    from dualbench.executor import add_arguments as add_executor_arguments
    p = subparsers.add_parser("study", help="run a seed-note study in both backends and write its report section")
    p.add_argument("name", help="study name (mse-vs-ce, mlp-regularisation, lenet, cnn-variants, food11) or 'list'")
    p.add_argument("--backend", "--backends", default="torch,paddle", help="torch, paddle or torch,paddle")
    p.add_argument("--datasets", help="only these of the study's datasets (comma list)")
    p.add_argument("--seeds", help="override the study's seeds (comma list)")
    p.add_argument("--threads", type=int, help="math threads per framework (default: all cores)")
    p.add_argument("--out", type=Path, default=Path("results/studies"),
                   help="folder of study folders (default: results/studies)")
    p.add_argument("--report-only", action="store_true", help="only rebuild the section from runs.csv")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_executor_arguments(p)
    p.set_defaults(func=cmd_study)
