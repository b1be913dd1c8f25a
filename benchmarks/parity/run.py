"""Running the checks and writing what they found: built-in tasks, or one model pair.

Results go to OUT/parity.csv and OUT/parity.md (atomically, after every pair, so an interrupt keeps
what was checked) and, for a model pair, OUT/mapping.json. The folder is locked for the whole run.
"""
import sys
from pathlib import Path

from dualbench.parity import checks
from dualbench.parity.mapping import write_mapping
from dualbench.parity.output import terminal_report, write_outputs
from dualbench.parity.pair import DROPOUT_POLICY, load_sides, structure_error
from dualbench.parity.rows import error_row, error_text, finish


def run_parity(tasks, config, out_dir, sides=None, echo=print):
    """Check every task, write OUT/parity.csv and OUT/parity.md; returns (rows frame, summary).
    Holds the lock on OUT throughout."""
    from dualbench.common.fsutil import folder_lock
    with folder_lock(out_dir, "parity"):
        return _run_tasks(tasks, config, out_dir, sides, echo)


def _run_tasks(tasks, config, out_dir, sides, echo):
    from tqdm import tqdm
    sides = sides or load_sides()
    rows = []
    for task in tqdm(tasks, desc="parity", unit="task", file=sys.stderr, leave=False, disable=len(tasks) < 2):
        try:
            rows += checks.check_task(task, sides, config)
        except Exception as e:  # noqa: BLE001 - one task crashing is its FAIL row; the other tasks go on
            ctx = {"task": task.name, "dropout": DROPOUT_POLICY, "batch_size": config.batch_size,
                   "steps": config.steps, "torch_version": sides["torch"].version,
                   "paddle_version": sides["paddle"].version}
            rows += finish([error_row(ctx, "task", "-", "(crashed)", error_text(e))])
        # after every task, atomically: an interrupt keeps the tasks already checked
        frame, summary, worst = write_outputs(rows, out_dir)
    if echo:
        terminal_report(summary, worst, echo)
        echo(f"\nwrote {Path(out_dir) / 'parity.csv'} and {Path(out_dir) / 'parity.md'}")
    return frame, summary


def mapping_lines(mapping):
    """What the Markdown report says about a model pair's mapping."""
    low = [m for m in mapping.modules if m.confidence < 1.0]
    lines = [f"{len(mapping.modules)} module pairs, {len(mapping.tensors)} tensors "
             f"({sum(1 for t in mapping.tensors if t.transform == 'transpose')} transposed)",
             f"{len(low)} module pairs below confidence 1.0 (names differ or shapes differ)"]
    for side, left in (("torch", mapping.unmatched_torch), ("paddle", mapping.unmatched_paddle)):
        if left:
            shown = ", ".join(f"{u['module'] or '(model)'} ({u['type']})" for u in left[:8])
            lines.append(f"{side} modules without a counterpart: {len(left)} ({shown}"
                         f"{', ...' if len(left) > 8 else ''})")
    return lines


def timing_line(timings):
    """'time: building 1.2 s, matching 0.3 s, ...; total 20.1 s' (wall-clock, this machine)."""
    parts = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in (timings or {}).items())
    return f"time: {parts}; total {sum((timings or {}).values()):.1f} s"


def run_model_pair(pair, sides, config, out_dir, echo=print):
    """Check one model pair: OUT/mapping.json first (also when the structures differ), then the
    checks; returns (rows frame, summary). Raises UserError when tensors stay unmatched."""
    from dualbench.common.fsutil import folder_lock
    out_dir = Path(out_dir)
    with folder_lock(out_dir, "parity"):
        mapping_path = write_mapping(pair.mapping, out_dir / "mapping.json")
        problem = structure_error(pair.mapping, mapping_path)
        if problem:
            raise problem
        rows = checks.check_pair(pair, sides, config)
        frame, summary, worst = write_outputs(rows, out_dir, {pair.name: mapping_lines(pair.mapping) +
                                                              (pair.notes or []) + [timing_line(pair.timings)]})
    if echo:
        terminal_report(summary, worst, echo)
        for note in pair.notes or []:
            echo(f"note: {note}")
        echo(f"\n{timing_line(pair.timings)}")
        echo(f"wrote {out_dir / 'parity.csv'}, {out_dir / 'parity.md'} and {mapping_path}")
    return frame, summary
