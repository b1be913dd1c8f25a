"""A study's section: OUT/NAME/study.md with its tables and plots, summary.csv, claims.csv, backends.csv,
and OUT/index.md linking every study present."""
import math
from pathlib import Path

import pandas as pd

from dualbench.common.errors import UserError
from dualbench.report.markdown import fmt, markdown_table, read_optional, safe_name
from dualbench.study.analysis import arm_rows, backend_differences, check_claims, is_synthetic, summarise
from dualbench.study.plots import plot_study


PLOTS = "plots"


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
    return fmt(value, digits)


def summary_markdown(summary):
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
    table = summary[["arm", "backend", "output_grad_init", "output_grad_epoch1"]].copy()
    for col in ("output_grad_init", "output_grad_epoch1"):
        table[col] = table[col].map(lambda v: f"{v:.4g}" if math.isfinite(v) else "n/a")
    table.columns = ["arm", "backend", "‖∂loss/∂logits‖ per sample, at init", "after epoch 1"]
    return markdown_table(table)


def reference_markdown(study, summary):
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
    from dualbench.study.studies import STUDIES
    out_root = Path(out_root)
    lines = ["# Studies", "", "Each section is rebuilt by `dualbench study NAME` from its own runs.csv.", ""]
    for name, study in STUDIES.items():
        if (out_root / name / "study.md").exists():
            lines.append(f"- [{name}]({name}/study.md): {study.title} (seed {study.seed_notes})")
    atomic_write_text(out_root / "index.md", "\n".join(lines) + "\n")
