"""`dualbench run`: train each (backend, seed) cell in its own process and append tidy rows to runs.csv.

Each cell runs in a fresh worker process with the thread count pinned through the environment,
so the frameworks never share threads or memory pools, and paddle's import-time OMP setting
cannot throttle torch. Cells are interleaved (seed 0: torch, paddle; seed 1: torch, paddle; ...).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from dualbench import backends
from dualbench.engine import cell_key, new_run_id
from dualbench.worker import PARENT_ENV
from dualbench.common.data.catalog import get_info
from dualbench.common.data.sources import locate, missing_message
from dualbench.common.errors import UserError
from dualbench.common.results import RUN_COLUMNS, append_rows, host_metadata, now, read_csv, thread_env


def parse_seeds(text):
    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers, got '{text}'") from None
    if not seeds:
        raise UserError("--seeds is empty")
    return seeds


def check_dataset(task, dataset, data_path):
    info = get_info(dataset)
    if tuple(info.shape) != tuple(task.model.input_shape):
        raise UserError(f"dataset '{dataset}' has images {info.shape}, task '{task.name}' "
                        f"expects {tuple(task.model.input_shape)}")
    if not info.synthetic and locate(dataset, data_path) is None:
        raise UserError(missing_message(dataset))


CELL_DIR_PREFIX = "dualbench-cell-"


def remove_stale_cell_dirs():
    """Remove the cell folders of dualbench processes that no longer exist (killed with -9)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{CELL_DIR_PREFIX}*-*"):
        try:
            pid = int(folder.name[len(CELL_DIR_PREFIX):].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


def run_worker(cell, threads, stderr=None):
    """Run one cell in a child process; returns (returncode, result dict or None).

    If this process is interrupted (Ctrl-C, SIGTERM) the child is stopped too and nothing of the
    cell is returned, so an unfinished cell is never recorded as finished. stderr: where the child's
    goes (default: ours).
    """
    with tempfile.TemporaryDirectory(prefix=f"{CELL_DIR_PREFIX}{os.getpid()}-") as tmp:
        cell_path, result_path = Path(tmp) / "cell.json", Path(tmp) / "result.json"
        cell_path.write_text(json.dumps(cell))
        proc = subprocess.Popen([sys.executable, "-m", "dualbench.worker", str(cell_path), str(result_path)],
                                env={**thread_env(threads), PARENT_ENV: str(os.getpid())}, stderr=stderr)
        try:
            rc = proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        result = json.loads(result_path.read_text()) if result_path.exists() else None
    if rc < 0:
        result = {"error": f"worker killed by signal {-rc}"}
    return rc, result


def finished_keys(csv_path):
    """cell_keys already finished in runs.csv: tested, early-stopped or diverged (failed ones rerun)."""
    if not csv_path.exists():
        return set()
    frame = read_csv(csv_path, RUN_COLUMNS)
    done = frame[frame.test_acc.notna() | frame.status.isin(["early_stopped", "diverged"])]
    return set(done.cell_key)


def failed_row(cell, error):
    return {"run_id": cell["run_id"], "cell_key": cell_key(cell), "task": cell["task"], "backend": cell["backend"],
            "seed": cell["seed"], "status": "failed", "error": error, "dataset": cell["dataset"],
            "init": cell["init"], "device": cell["device"], "threads": cell["threads"], "timestamp": now(),
            **host_metadata()}


def plan_cells(tasks, backend_names, seeds, out_dir, run_id, epochs=None, dataset=None, data_path=None,
               limit_train=None, init="own", device="cpu", threads=None, progress=True, lr=None, batch_size=None,
               augment=None, deterministic=False):
    """Every task x seed x backend cell, interleaving the backends; the datasets are checked here."""
    for name in backend_names:
        backends.require(name)
    cells = []
    for task in tasks:
        ds = dataset or task.data.dataset
        check_dataset(task, ds, data_path)
        for seed in seeds:
            for name in backend_names:
                cells.append({"run_id": run_id, "task": task.name, "backend": name, "seed": seed, "epochs": epochs,
                              "lr": lr, "batch_size": batch_size, "augment": augment,
                              "dataset": ds, "data_path": str(data_path) if data_path else None,
                              "limit_train": limit_train, "init": init, "device": device,
                              "threads": threads or os.cpu_count() or 1,
                              "deterministic": deterministic, "out_dir": str(out_dir), "progress": progress})
    return cells


def run(tasks, backend_names, seeds, out_dir, epochs=None, dataset=None, data_path=None, limit_train=None,
        init="own", device="cpu", threads=None, progress=True, lr=None, batch_size=None, augment=None,
        deterministic=False, executor=None):
    """Run every task x seed x backend cell; returns the final rows (one per cell).

    Cells already finished in OUT/runs.csv with the same arguments are skipped, so rerunning an
    interrupted command resumes it. A failing cell is recorded as `failed` and the others go on.
    """
    out_dir = Path(out_dir)
    cells = plan_cells(tasks, backend_names, seeds, out_dir, new_run_id(), epochs=epochs, dataset=dataset,
                       data_path=data_path, limit_train=limit_train, init=init, device=device, threads=threads,
                       progress=progress, lr=lr, batch_size=batch_size, augment=augment, deterministic=deterministic)
    csv_path = out_dir / "runs.csv"
    finals, failed = run_cells(cells, csv_path, executor)
    print_summary(finals, csv_path)
    if failed:
        print(f"dualbench: {failed} cell(s) failed (status 'failed' in {csv_path})", file=sys.stderr)
        raise SystemExit(1)
    return finals


def executed(cells, executor=None):
    """(cell, returncode, result) for each cell as it finishes: one worker process at a time on this machine,
    or Ray tasks across a cluster (`--executor ray`, dualbench.ray_executor)."""
    if executor is not None and executor.kind == "ray":
        yield from executor.run_cells(cells)
        return
    for cell in cells:
        yield (cell, *run_worker(cell, cell["threads"]))


def run_cells(cells, csv_path, executor=None):
    """Run the cells not yet finished in csv_path, appending each one's rows as soon as it finishes (a failed
    cell's too); returns (final rows of the cells run, number of failed cells)."""
    remove_stale_cell_dirs()   # what a kill -9 of an earlier run left in the temp folder
    done = finished_keys(csv_path)
    todo = [c for c in cells if cell_key(c) not in done]
    if len(todo) < len(cells):
        print(f"resuming: {len(cells) - len(todo)} of {len(cells)} cells already finished in {csv_path}",
              file=sys.stderr)
    finals, failed = [], 0
    for cell, rc, result in executed(todo, executor):
        if rc == 2:
            raise SystemExit(2)   # the worker already printed the one-line error
        if result is None or "error" in result:
            error = (result or {}).get("error", f"worker exited with code {rc}")
            print(f"dualbench: {cell['task']} {cell['backend']} seed {cell['seed']} failed: {error}", file=sys.stderr)
            # a cell that ran on a Ray node records that node, not the driver's
            append_rows(csv_path, [{**failed_row(cell, error), **(result or {}).get("node", {})}], RUN_COLUMNS)
            failed += 1
            continue
        append_rows(csv_path, result["rows"], RUN_COLUMNS)
        finals.append(result["rows"][-1])
    return finals, failed


def print_summary(finals, csv_path):
    if not finals:
        return
    frame = pd.DataFrame(finals)
    cols = ["task", "backend", "seed", "epoch", "status", "train_loss", "val_acc", "test_acc", "samples_per_s",
            "dataset", "threads"]
    frame = frame.reindex(columns=cols)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-"))
    print(f"rows appended to {csv_path}")
