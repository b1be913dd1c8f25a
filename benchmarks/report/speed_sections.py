"""The speed part of the report: the headline (equal settings and each at its best), every configuration,
tuning, inference, harness overhead and time to target, each section a function returning Markdown lines."""
import math

import pandas as pd

from dualbench.report.markdown import fmt, fmt_ci, markdown_table, read_optional
from dualbench.report.plots import plot_throughput
from dualbench.report.speed import (NOISE, OVERHEAD_TARGET, infer_summary, node_column, noise_floor,
                                    overhead_summary, problem_cells, speed_summary, stage_ratios, ttt_summary,
                                    tuning_summary)
from dualbench.report.tables import (aa_note, config_label, duplicate_note, equal_label, excluded_label,
                                     floor_sentences, machine_load_note, needed_label, pair_training, precision_line,
                                     problem_table, processes_label, second_stage_notes, spread_label)
from dualbench.common.results import write_table
from dualbench.common.stats import BAND


def _speed_markdown(summary, decisions=None):
    notes = second_stage_notes(summary, decisions)
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
        "spread per pair": [spread_label(v) for v in summary["spread_pct"]],
        "pairs for ±3%": [needed_label(v) for v in summary["pairs_for_3pct"]],
        "machine noise, second stage": ["; ".join(t for t in (r["machine_noise"], note) if t) or "-"
                                        for (_, r), note in zip(summary.iterrows(), notes)],
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
        noise = f" ({NOISE})" if r[f"{label}_machine_noise"] == NOISE else ""
        return (f"{fmt_ci(r[f'{label}_ratio'], r[f'{label}_ratio_lo'], r[f'{label}_ratio_hi'], ratio=True)} "
                f"{r[f'{label}_verdict']}{noise}")

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


# ---------------------------------------------------------------------------------------------
# The sections


def speed_section(bench, directory, plot_dir):
    """'## Speed' with its sub-sections, the inference and overhead sections and time to target; writes
    speed_summary.csv, tuning_summary.csv and infer_summary.csv beside the report. plot_dir None: no plots."""
    md = ["## Speed: torch / paddle throughput", ""]
    if bench is None:
        return md + ["`dualbench bench` was not run into this folder (no bench.csv).", ""]
    for note in (machine_load_note(bench), duplicate_note(bench)):
        if note:
            md += [note, ""]
    md += problems_section(bench)
    aa, floors = noise_floor(bench)
    summary, overhead = speed_summary(bench, floors=floors), overhead_summary(bench)
    md += noise_section(aa, floors, directory)
    if len(summary):
        write_table(directory / "speed_summary.csv", summary)
        decisions = read_optional(directory / "second_stage.csv")
        md += headline_section(summary, overhead) + configurations_section(summary, plot_dir, decisions)
    md += tuning_section(bench, directory) + inference_section(bench, directory)
    md += overhead_section(overhead) + ttt_section(bench)
    return md


def problems_section(bench):
    problems = problem_table(bench)
    if problems is None:
        return []
    return ["### Failed / diverged cells", "",
            f"{len(problem_cells(bench))} bench.csv row(s) recorded a cell that failed (an exception, out of "
            "memory or a crashed worker) or diverged (NaN/Inf loss or weights). They hold no timings and are "
            "left out of every number below; a configuration without a complete torch/paddle pair has no "
            "ratio. Rerunning the same `dualbench bench` command retries the failed cells.", "",
            markdown_table(problems)]


def noise_section(aa, floors, directory):
    """The machine's noise floor from the A/A pairs, and each A/A configuration (noise_floor's aa and floors);
    writes aa_summary.csv."""
    if not len(aa):
        return []
    write_table(directory / "aa_summary.csv", aa)
    table = pd.DataFrame({
        "task": aa["task"], "framework": aa["backend"], "batch": [fmt(v) for v in aa["batch_size"]],
        "setting": aa["setting"],
        "A/A ratio a/b [95% CI]": [fmt_ci(r["ratio"], r["ratio_lo"], r["ratio_hi"], ratio=True) for _, r in aa.iterrows()],
        "spread per pair": [spread_label(v) for v in aa["spread_pct"]],
        "pairs": aa["pairs"], "pairs for ±3%": [needed_label(v) for v in aa["pairs_for_3pct"]],
        "worker processes": [processes_label(r) for _, r in aa.iterrows()],
        "note": [aa_note(r) for _, r in aa.iterrows()],
    })
    return (["### Machine noise: each framework against itself (A/A)", ""]
            + [line for sentence in floor_sentences(floors) for line in (sentence, "")] +
            ["In the equal stage, right after the torch/paddle pair of the suite's smallest and largest task (by "
             "multiply-adds per step; a model pair: the pair), each framework is timed against itself: two worker "
             "processes of the same framework and setting (sides a and b, each its own process; the rows record "
             "`worker_pid`), back to back, a first in one pair and b first in the next, exactly like a torch/paddle "
             "pair. Their per-pair log ratios spread only by what the machine and the harness do to a ratio. A "
             f"torch/paddle ratio whose CI overlaps the A/A ratio's CI is labelled *{NOISE}*: the frameworks "
             "differ there by no more than a framework differs from itself. An A/A ratio whose CI excludes 1 is not "
             "noise but a harness or order bias, and its note says so. The A/A rows are in no torch/paddle ratio.",
             "", markdown_table(node_column(table, aa))])


def headline_section(summary, overhead):
    if not (summary["stage"] == "best").any():
        return []
    return ["### Equal settings and each at its best", "",
            "The torch/paddle training throughput ratio (above 1: torch faster) twice: with both at the "
            "same setting (the machine's cores as math threads, each framework's default switches) and "
            "with each framework at its own fastest setting, chosen by the tuning stage below on windows "
            "that are not reused here. A ratio is *input-pipeline-bound* when a side's engine loop "
            f"reaches less than {OVERHEAD_TARGET} of its bare loop (pre-loaded tensors) at that setting: it "
            "then measures that framework's DataLoader as much as its model; *within machine noise* when its "
            "CI overlaps the A/A ratio's CI above.", "",
            _headline_markdown(stage_ratios(summary, overhead))]


def configurations_section(summary, plot_dir, decisions=None):
    table, details = _speed_markdown(summary, decisions)
    md = ["### All configurations", "",
          f"Steady-state samples/s through the native DataLoader (warm-up excluded; model pairs: pre-loaded "
          f"random batches): median over repeats with a distribution-free 95% CI (needs ≥ 6 repeats). Each "
          f"repeat runs torch and paddle back to back in their own worker processes, each at the setting "
          f"shown; the ratio is the geometric mean of the per-pair ratios with a paired t-interval on the "
          f"log ratios. Verdict: *faster* / *slower* when the whole CI lies above {1 + BAND:.2f} / below "
          f"{1 - BAND:.2f}, *same* when it lies inside [{1 - BAND:.2f}, {1 + BAND:.2f}], otherwise "
          f"*inconclusive*. *CI ±%*: the CI's larger relative half-width. *Spread per pair*: the standard "
          f"deviation of the per-pair log ratios (about ± that percentage per pair); *pairs for ±3%*: the pairs a "
          f"CI within ±3% needs at that spread. Configurations wider than the suite's target after the first "
          f"repeats get more pairs in a second stage, as far as the time budget allows (README, bench), except "
          f"those whose spread is about the A/A spread and whose pairs would not fit in the time left: more pairs "
          f"would not reach the target there, and the last column says so.",
          "", precision_line(summary), "", table,
          "Per step: median ms/step, the share of it spent in the reader (DataLoader + copy to device), the "
          "time per epoch of the task's real training set at that speed, the first step (includes "
          "compilation in compiled mode) and peak memory (RSS of the worker on CPU, allocator peak on GPU).",
          "", details]
    if plot_dir is not None:
        plot_throughput(summary, plot_dir / "throughput.png")
        md += [f"![throughput]({plot_dir.name}/throughput.png)", ""]
    return md


def summary_section(summary, heading, text, to_markdown, csv_path=None):
    """A section of one summary table: none without rows; else the table written to csv_path (when given)
    and the heading, the text saying how to read it and the table in Markdown (to_markdown)."""
    if not len(summary):
        return []
    if csv_path is not None:
        write_table(csv_path, summary)
    return [heading, "", text, "", to_markdown(summary)]


def tuning_section(bench, directory):
    return summary_section(
        tuning_summary(bench), "### Tuning",
        "Each framework on its own, one short cell per candidate setting (math threads, oneDNN on and off; "
        "compiled mode with --tune-compile); the fastest (bold) is the framework's *best* setting. The "
        "percentages are each candidate's speed relative to the fastest. These cells only choose: the "
        "ratios above come from new, interleaved repeats (no winner's curse).",
        _tuning_markdown, directory / "tuning_summary.csv")


def inference_section(bench, directory):
    return summary_section(
        infer_summary(bench), "## Inference latency",
        "Eval mode, no autograd, one batch per call over batches already in memory; the clock is read "
        "around every call (after a device sync). Per repeat the median and 95th percentile over its "
        "calls; the table gives the median over repeats with a 95% CI, and the paired latency ratio "
        "torch/paddle (below 1: torch answers faster; the verdict says whether torch is faster).",
        _infer_markdown, directory / "infer_summary.csv")


def overhead_section(overhead):
    md = ["## Harness overhead", ""]
    if not len(overhead):
        return md + ["Not measured (run `dualbench bench --bare`).", ""]
    return md + [f"The engine against a bare loop over batches pre-loaded on the device (same model, optimizer, "
                 f"batch size, same worker process, windows alternating). *Harness (compute)* = bare ms/step ÷ the "
                 f"engine's ms/step without its reader time: what the harness itself costs. *End to end* = engine "
                 f"samples/s ÷ bare samples/s: this also charges the input pipeline (the framework's DataLoader "
                 f"and the batch gather). Target ≥ {OVERHEAD_TARGET}.", "", _overhead_markdown(overhead)]


def ttt_section(bench):
    return summary_section(
        ttt_summary(bench), "## Time to target accuracy",
        "Training seconds (evaluation excluded) until the evaluation accuracy first reaches the task's "
        "target, through the engine's epoch loop; n/a when not reached within the task's epochs.",
        _ttt_markdown)
