"""`dualbench report [DIR]`: a Markdown report and PNG plots rebuilt from DIR's CSVs (never edited by hand).

Reads DIR/runs.csv (dualbench run), DIR/bench.csv (dualbench bench) and DIR/parity.csv (dualbench
parity), each if present, and writes DIR/report.md, DIR/speed_summary.csv and DIR/plots/*.png, every
file atomically. Statistics come from common.stats (see its docstring for the choices).

Bench rows with status failed or diverged hold no timings: they are listed in their own table and left
out of every speed number; a cell that failed and then succeeded on a rerun counts as measured.

The package follows the report's jobs:

  cli             the command
  sections        the report section by section (accuracy, speed, parity, machine) and build_report()
  speed_sections  the speed sections: headline, configurations, tuning, inference, overhead, time to target
  speed           bench.csv summarised: ratios per stage, tuning, inference, overhead, time to target
  tables          the tables as DataFrames, their labels and notes
  markdown        numbers, CIs and Markdown tables (public: `dualbench study` uses them)
  plots           matplotlib figures (public: pyplot(), save_figure())
  terminal        the summary `dualbench bench` prints
"""
from dualbench.report.cli import cmd_report, register  # noqa: F401
from dualbench.report.markdown import fmt, fmt_ci, markdown_table, read_optional, safe_name  # noqa: F401
from dualbench.report.sections import build_report  # noqa: F401
from dualbench.report.speed import (OVERHEAD_TARGET, infer_summary, overhead_summary, speed_summary,  # noqa: F401
                                    stage_ratios, ttt_summary, tuning_summary)
from dualbench.report.tables import accuracy_table, config_label, machine_load_note, problem_table  # noqa: F401
from dualbench.report.terminal import print_speed_summary  # noqa: F401
