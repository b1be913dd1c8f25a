"""`dualbench parity`: prove torch and paddle compute the same thing, or say where and why not.

Two sources of model pairs share one engine: the built-in tasks (both models built from one spec,
mapped by name) and any torch model paired with any paddle model (matched by running them). The
package follows the engine's jobs:

  pair       the pair of models, its inputs, start weights and the two framework sides
  match      matching the modules of two models written separately (execution order, kinds, shapes)
  mapping    the module/tensor correspondence, its file, and moving weights through it
  transfer   check 1: weights round trips, bit-exact
  checks     checks 2-5: forward per module, loss and gradients, training steps, schedule
  diagnose   the cause of the first difference, and verdicts (expected, noise, vacuous)
  rows       one comparison per row; tolerances and the measurements behind them
  output     parity.csv, parity.md, the terminal report
  run        running tasks or a model pair into an output folder
  api        compare_models() for a user's own tests
  convert    `dualbench convert`: checkpoints between the frameworks, verified
  cli        the `dualbench parity` command
"""
from dualbench.parity.api import ParityResult, compare_models  # noqa: F401
from dualbench.parity.checks import check_pair, check_task  # noqa: F401
from dualbench.parity.cli import register  # noqa: F401
from dualbench.parity.output import check_table, summarise, write_outputs  # noqa: F401
from dualbench.parity.pair import ParityConfig, Side, load_side, load_sides  # noqa: F401
from dualbench.parity.rows import COLUMNS, TOLERANCES  # noqa: F401
from dualbench.parity.run import run_parity  # noqa: F401
from dualbench.parity.conventions import rules  # noqa: F401

__all__ = ["ParityResult", "compare_models", "check_pair", "check_task", "register", "check_table", "summarise",
           "write_outputs", "ParityConfig", "Side", "load_side", "load_sides", "COLUMNS", "TOLERANCES", "run_parity", "rules"]
