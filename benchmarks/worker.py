"""Worker process: runs one cell with one framework imported, writes its rows as JSON.

`python -m benchmarks.worker CELL.json RESULT.json`. Exit 0 on success, 2 on a user error (one
line on stderr), 1 on any other failure (its last line on stderr).
"""
import json
import sys

from common.errors import UserError
from common.fsutil import atomic_write_text


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    cell_path, result_path = argv
    with open(cell_path) as f:
        cell = json.load(f)
    from benchmarks.engine import run_cell
    try:
        rows, checkpoint = run_cell(cell, progress=cell.get("progress", True))
    except UserError as e:
        print(f"dualbench: error: {e}", file=sys.stderr)
        return 2
    atomic_write_text(result_path, json.dumps({"rows": rows, "checkpoint": str(checkpoint) if checkpoint else None},
                                              default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
