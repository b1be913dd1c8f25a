"""`dualbench study NAME`: run one of the seed notes' studies in both frameworks and write its section.

Every cell goes through `dualbench run`'s engine (one worker process per cell, resume by cell key, failed
and diverged cells recorded), into OUT/NAME/runs.csv. Then the study's section is rebuilt from that CSV
alone: OUT/NAME/study.md with tables, claim checks and plots, OUT/NAME/summary.csv and claims.csv, and
OUT/index.md linking every study present. The package follows those jobs:

  studies    the studies themselves, as plain data (arms, datasets, comparisons)
  running    running a study's cells
  analysis   summaries, claims and torch vs paddle, from runs.csv
  plots      the figure per dataset
  section    study.md and the CSVs beside it, and the index
  cli        the command
"""
from dualbench.study.analysis import BACKEND_COLUMNS, CLAIM_COLUMNS, backend_differences, check_claims, summarise  # noqa: F401
from dualbench.study.cli import cmd_study, register  # noqa: F401
from dualbench.study.running import run_study  # noqa: F401
from dualbench.study.section import build_section, write_index  # noqa: F401
from dualbench.study.studies import STUDIES, get_study  # noqa: F401
