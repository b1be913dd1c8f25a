"""A study's numbers, from its runs.csv alone: per-arm summaries, the claims checked with Welch's t-test
(Holm-adjusted over the study), and torch vs paddle per arm."""
import math

import pandas as pd

from dualbench.common.stats import compare_means, holm, mean_ci


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
    from dualbench.study.studies import arm_by_label
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
