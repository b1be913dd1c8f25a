"""The report, section by section: each function returns the Markdown lines of one section, and
build_report() puts them together in order and writes the files."""
from pathlib import Path

from dualbench.common.errors import UserError
from dualbench.report.markdown import markdown_table, read_optional, safe_name
from dualbench.report.plots import plot_curves
from dualbench.report.speed_sections import speed_section
from dualbench.report.tables import accuracy_table, final_runs, machine_table, parity_summary
from dualbench.timings.table import measured

PLOTS = "plots"
SOURCES = ("runs.csv", "bench.csv", "parity.csv")


def header_section(directory, frames):
    counts = ", ".join(f"{name}: {len(frame)} rows" for name, frame in frames.items() if frame is not None)
    return ["# dualbench report", "",
            f"Built by `dualbench report` from the CSV files in `{directory}` ({counts}). "
            "Every number below is derived from those rows; rebuild with the same command.", ""]


def accuracy_section(runs, plot_dir, plots):
    md = ["## Accuracy per task and backend", ""]
    if runs is None:
        return md + ["`dualbench run` was not run into this folder (no runs.csv).", ""]
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
    return md


def parity_section(parity):
    md = ["## Parity", ""]
    if parity is None:
        return md + ["Parity was not run (no parity.csv; see `dualbench parity`).", ""]
    table = parity_summary(parity)
    return md + ["Numerical agreement of the two backends with shared weights (from parity.csv).", "",
                 markdown_table(table) if table is not None else "_parity.csv has no task column_\n"]


def machine_section(runs, bench, parity):
    machine = machine_table({"runs": runs, "bench": measured(bench) if bench is not None else None,
                             "parity": parity})
    return ["## Machine and versions", "",
            markdown_table(machine) if machine is not None else "_no metadata columns found_\n"]


def build_report(directory, out=None, plots=True):
    """Write the report (default DIR/report.md), its plots and DIR/speed_summary.csv; returns the report path."""
    from dualbench.common.fsutil import atomic_write_text
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: no such results folder (run `dualbench run/bench --out {directory}` first)")
    out = Path(out) if out else directory / "report.md"
    plot_dir = out.parent / PLOTS
    frames = {name: read_optional(directory / name) for name in SOURCES}
    runs, bench, parity = (frames[name] for name in SOURCES)
    if runs is None and bench is None and parity is None:
        raise UserError(f"{directory}: none of runs.csv, bench.csv, parity.csv found")
    md = (header_section(directory, frames) + accuracy_section(runs, plot_dir, plots)
          + speed_section(bench, directory, plot_dir if plots else None)
          + parity_section(parity) + machine_section(runs, bench, parity))
    atomic_write_text(out, "\n".join(md) + "\n")
    return out
