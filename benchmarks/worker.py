"""Worker process: runs one cell with one framework imported, writes its result as JSON.

`python -m dualbench.worker CELL.json RESULT.json`. Exit 0 with {"rows": ...} on success; exit 2
on a user error (one line on stderr, nothing written); exit 1 with {"error": "..."} on any other
failure; 130 when interrupted (nothing written: the cell in flight never counts as finished).
"""
import json
import os
import signal
import sys

from dualbench.common.errors import UserError
from dualbench.common.fsutil import atomic_write_text

PARENT_ENV = "DUALBENCH_PARENT_PID"


def die_with_parent():
    """Linux: ask the kernel to SIGKILL this worker when its parent dies, kill -9 included, so that an
    orphan never keeps computing (and, for bench, timing) beside the rerun that resumes the suite.
    The parent puts its pid in DUALBENCH_PARENT_PID; a parent already gone means exit now."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):
        os._exit(1)


OOM_MARKERS = ("out of memory", "resourceexhausted", "fail to alloc", "cannot allocate memory")


def is_out_of_memory(exc):
    """MemoryError (paddle raises it for host and GPU), torch's OutOfMemoryError, or an OOM message."""
    text = f"{type(exc).__name__} {exc}".lower()
    return isinstance(exc, MemoryError) or any(marker in text for marker in OOM_MARKERS)


def error_line(exc, cell, advice="try a smaller --batch-size or --limit-train"):
    """The exception's last line, with advice for out-of-memory.

    Out of memory names the batch size and suggests `advice`; for a multi-line message (paddle's end
    with a hint and a source location) the line that mentions memory is shown instead of the last.
    """
    text = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    detail = text[-1] if text else ""
    oom = is_out_of_memory(exc)
    if oom:
        detail = next((line for line in text if "memory" in line.lower()), detail)
    line = f"{type(exc).__name__}: {detail}".strip()
    if oom:
        line += f" (out of memory at batch size {cell.get('batch_size') or 'of the task'}; {advice})"
    return line


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    cell_path, result_path = argv
    die_with_parent()
    with open(cell_path) as f:
        cell = json.load(f)
    try:
        from dualbench.engine import run_cell
        rows, checkpoint = run_cell(cell, progress=cell.get("progress", True))
        result = {"rows": rows, "checkpoint": str(checkpoint) if checkpoint else None}
    except UserError as e:
        print(f"dualbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - any failure of one cell is recorded, the suite goes on
        atomic_write_text(result_path, json.dumps({"error": error_line(e, cell)}))
        import traceback
        traceback.print_exc()
        return 1
    atomic_write_text(result_path, json.dumps(result, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
