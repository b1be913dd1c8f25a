"""`dualbench bench`: paired, interleaved speed benchmarks of torch vs paddle (see cli.py for how a run
is organised). The package follows the jobs of a run:

  suites     which tasks, batch sizes, modes and timing settings
  planning   cells, their keys, the interleaved groups, the second stage's extra pairs
  pool       the worker processes that time the cells, and appending their rows
  cli        the command: plan, resume, execute, summarise
The bench.csv schema lives in timings.table (the report reads it too).
"""
from dualbench.bench.cli import bench, cmd_bench, register, second_stage  # noqa: F401
from dualbench.bench.planning import cell_key, config_id, pending_cells, plan, second_stage_pairs  # noqa: F401
from dualbench.bench.pool import Worker, cell_seconds, death_line, execute  # noqa: F401
from dualbench.bench.suites import (CIFAR_LIKE, MNIST_LIKE, SUITES, Suite, epoch_samples, parse_int_list,  # noqa: F401
                                    random_samples, suite_from_args, suite_tasks, ttt_dataset)
from dualbench.timings.table import BENCH_COLUMNS, done_keys, problem_rows, recorded_keys, row_status  # noqa: F401
from dualbench.common.errors import UserError  # noqa: F401
