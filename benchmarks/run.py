"""`dualbench run`: train each (backend, seed) cell in its own process and append tidy rows to runs.csv.

Each cell runs in a fresh worker process with the thread count pinned through the environment,
so the frameworks never share threads or memory pools, and paddle's import-time OMP setting
cannot throttle torch. Cells are interleaved (seed 0: torch, paddle; seed 1: torch, paddle; ...).
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

import backends
from benchmarks.engine import new_run_id
from common.data.sources import get_info, locate, missing_message
from common.errors import UserError
from common.results import RUN_COLUMNS, append_rows, thread_env


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


def run_worker(cell, threads):
    """Run one cell in a child process; returns (returncode, result dict or None)."""
    with tempfile.TemporaryDirectory(prefix="dualbench-cell-") as tmp:
        cell_path, result_path = Path(tmp) / "cell.json", Path(tmp) / "result.json"
        cell_path.write_text(json.dumps(cell))
        proc = subprocess.run([sys.executable, "-m", "benchmarks.worker", str(cell_path), str(result_path)],
                              env=thread_env(threads), cwd=Path(__file__).resolve().parent.parent)
        result = json.loads(result_path.read_text()) if proc.returncode == 0 and result_path.exists() else None
    return proc.returncode, result


def run(tasks, backend_names, seeds, out_dir, epochs=None, dataset=None, data_path=None, limit_train=None,
        init="own", device="cpu", threads=None, progress=True):
    """Run every task x seed x backend cell; returns the final rows (one per cell)."""
    for name in backend_names:
        backends.require(name)
    threads = threads or os.cpu_count() or 1
    out_dir = Path(out_dir)
    csv_path = out_dir / "runs.csv"
    run_id = new_run_id()
    finals, failed = [], []
    for task in tasks:
        ds = dataset or task.data.dataset
        check_dataset(task, ds, data_path)
        for seed in seeds:
            for name in backend_names:
                cell = {"run_id": run_id, "task": task.name, "backend": name, "seed": seed, "epochs": epochs,
                        "dataset": ds, "data_path": str(data_path) if data_path else None,
                        "limit_train": limit_train, "init": init, "device": device, "threads": threads,
                        "out_dir": str(out_dir), "progress": progress}
                rc, result = run_worker(cell, threads)
                if rc == 2:
                    raise SystemExit(2)   # the worker already printed the one-line error
                if result is None:
                    print(f"dualbench: cell {task.name}/{name}/seed {seed} failed (exit code {rc})", file=sys.stderr)
                    failed.append(cell)
                    continue
                append_rows(csv_path, result["rows"], RUN_COLUMNS)
                finals.append(result["rows"][-1])
    print_summary(finals, csv_path)
    if failed:
        raise SystemExit(1)
    return finals


def print_summary(finals, csv_path):
    if not finals:
        return
    frame = pd.DataFrame(finals)
    cols = ["task", "backend", "seed", "epoch", "status", "train_loss", "val_acc", "test_acc", "samples_per_s",
            "dataset", "threads"]
    print(frame[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"rows appended to {csv_path}")
