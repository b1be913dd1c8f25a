"""The ratio tables on the terminal, printed by `dualbench bench` when it finishes."""
import math
from pathlib import Path

import pandas as pd

from dualbench.report.markdown import fmt, fmt_ci, read_optional
from dualbench.report.speed import infer_summary, node_column, noise_floor, overhead_summary, speed_summary
from dualbench.report.tables import (aa_note, config_label, floor_sentences, needed_label, precision_line,
                                     problem_table, second_stage_notes, spread_label)


def print_noise_floor(aa, floors):
    """The A/A pairs (noise_floor's aa and floors): the floor sentence per suite and node, and each A/A
    configuration."""
    if not len(aa):
        return
    for sentence in floor_sentences(floors):
        print(sentence.replace("**", ""))
    print(pd.DataFrame({
        "A/A task": aa["task"], "framework": aa["backend"],
        "a/b [95% CI]": [fmt_ci(r["ratio"], r["ratio_lo"], r["ratio_hi"], ratio=True) for _, r in aa.iterrows()],
        "spread": [spread_label(v) for v in aa["spread_pct"]], "pairs": aa["pairs"],
        "processes": aa["processes"], "note": [aa_note(r) for _, r in aa.iterrows()]}).to_string(index=False))
    print()


def print_speed_summary(csv_path):
    """The ratio table on the terminal, after `dualbench bench`."""
    from dualbench.common.results import read_csv
    bench = read_csv(csv_path)
    aa, floors = noise_floor(bench)
    summary = speed_summary(bench, floors=floors)
    problems = problem_table(bench)
    if problems is not None:
        print("failed / diverged cells (left out of the ratios):")
        print(problems.to_string(index=False))
        print()
    print_noise_floor(aa, floors)
    if not len(summary):
        return
    notes = second_stage_notes(summary, read_optional(Path(csv_path).parent / "second_stage.csv"))
    table = pd.DataFrame({
        "task": summary["task"], "config": [config_label(r) for _, r in summary.iterrows()],
        "torch/s": [fmt(v, 4) for v in summary["torch_samples_per_s"]],
        "paddle/s": [fmt(v, 4) for v in summary["paddle_samples_per_s"]],
        "torch/paddle [95% CI]": [fmt_ci(r["ratio"], r["ratio_lo"], r["ratio_hi"], ratio=True) for _, r in summary.iterrows()],
        "CI ±%": [f"{v:.1f}" if math.isfinite(v) else "n/a" for v in summary["ratio_ci_pct"]],
        "verdict": summary["verdict"], "pairs": summary["pairs"],
        "spread": [spread_label(v) for v in summary["spread_pct"]],
        "±3% needs": [needed_label(v) for v in summary["pairs_for_3pct"]],
        "noise, second stage": ["; ".join(t for t in (noise, note) if t) or "-"
                                for noise, note in zip(summary["machine_noise"], notes)]})
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
