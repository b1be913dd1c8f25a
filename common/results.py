"""Tidy result rows: one schema, atomic CSV append, run metadata.

Every row is self-describing (versions, device, threads, seed, data checksum, batch-order hash,
git commit), so tables and plots can be rebuilt from the CSV alone.
"""
import contextlib
import csv
import datetime
import fcntl
import functools
import io
import os
import platform
import socket
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

import dualbench.common as common
from dualbench.common.errors import DataError
from dualbench.common.fsutil import atomic_path

# Columns of runs.csv, one row per (task, backend, seed, epoch). Documented in README.md.
RUN_COLUMNS = [
    "run_id", "task", "backend", "seed", "epoch", "status",
    "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr",
    "final_train_acc", "epoch_seconds", "samples_per_s", "n_train", "n_val", "n_test", "batch_size", "augment",
    "best_epoch", "diverged_step", "last_finite_loss", "error", "cell_key",
    "init", "init_scheme", "dataset", "dataset_source", "dataset_sha256", "synthetic",
    "batch_order_hash", "framework_version", "device", "device_name", "threads", "deterministic",
    "python", "numpy", "platform", "git_commit", "dualbench_version", "timestamp",
    "epochs_planned", "output_grad_init", "output_grad",
    "node", "node_hardware",
]


INT_COLUMNS = ("seed", "epoch", "epochs_planned", "n_train", "n_val", "n_test", "batch_size", "best_epoch", "threads",
               "diverged_step")


def cpu_name():
    """The CPU model (Linux /proc/cpuinfo), else the machine type."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit():
    """The commit of the dualbench checkout, with '+dirty' when it has local changes."""
    root = Path(common.__file__).resolve().parent.parent
    if not (root / "benchmarks").is_dir():   # installed, not a checkout: no commit of ours to read
        return "unknown"
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def memory_gib():
    """Total memory of the machine in GiB (Linux /proc/meminfo), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2 ** 20
    except (OSError, ValueError, IndexError):
        pass
    return None


def gpu_names():
    """NVIDIA GPUs as the driver lists them (/proc/driver/nvidia), read without importing a framework."""
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            model = next((line.split(":", 1)[1].strip() for line in info.read_text().splitlines()
                          if line.startswith("Model:")), "NVIDIA GPU")
        except OSError:
            continue
        names.append(model)
    return names


def hardware_summary():
    """One line for the machine: CPUs and their model, memory, GPUs (e.g. '2 CPUs (Intel Xeon ...), 23 GiB, no GPU')."""
    parts = [f"{os.cpu_count()} CPUs ({cpu_name()})"]
    memory = memory_gib()
    if memory is not None:
        parts.append(f"{memory:.0f} GiB")
    gpus = gpu_names()
    counts = {name: gpus.count(name) for name in dict.fromkeys(gpus)}
    parts.append(", ".join(f"{n}x {name}" for name, n in counts.items()) if gpus else "no GPU")
    return ", ".join(parts)


@functools.lru_cache(maxsize=None)
def node_metadata():
    """Which machine a row was made on: its host name and hardware, so that rows from a cluster say where
    they ran (and the report never pairs timings of two machines)."""
    return {"node": socket.gethostname(), "node_hardware": hardware_summary()}


def host_metadata():
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": f"{platform.system()}-{platform.machine()}",
        "git_commit": git_commit(),
        "dualbench_version": common.__version__,
        **node_metadata(),
    }


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def read_csv(path, columns=None):
    """Read a results CSV; a malformed file is a DataError naming it."""
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(path, f"not a readable results CSV ({str(e).splitlines()[0]})") from None
    if columns is not None and list(frame.columns) != list(columns):
        if not set(frame.columns) <= set(columns):
            unknown = sorted(set(frame.columns) - set(columns))
            raise DataError(path, f"columns {unknown} are not in this version's schema; "
                                  "write to a new --out directory")
        # an older schema (a subset of today's columns): read it in today's layout, new columns empty
        frame = frame.reindex(columns=list(columns))
    return frame


@contextlib.contextmanager
def locked(path):
    """An exclusive lock on the CSV's folder, so that two dualbench processes appending to the same
    CSV (e.g. two study queues) serialise their read-modify-rename instead of losing rows. Locking
    the folder leaves no lock file behind."""
    folder = Path(path).parent
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)   # closing releases the lock


def append_rows(path, rows, columns):
    """Append rows to a CSV atomically: the file is either the old one or old + all new rows."""
    path = Path(path)
    if not rows:
        return
    frame = pd.DataFrame(rows)
    unknown = set(frame.columns) - set(columns)
    if unknown:
        raise ValueError(f"rows have columns outside the schema: {sorted(unknown)}")
    frame = frame.reindex(columns=columns)
    with locked(path):
        # every writer holds the lock, so a temporary file of this CSV seen now was left by a killed one
        for stale in path.parent.glob(f".{path.name}.*.part"):
            stale.unlink(missing_ok=True)
        old = b""
        if path.exists() and path.stat().st_size > 0:
            # refuses a file with foreign columns or broken content; an older schema is upgraded
            existing = read_csv(path, columns)
            if _header(path) != list(columns):
                buf = io.StringIO()
                _typed(existing).to_csv(buf, index=False, lineterminator="\n")
                old = buf.getvalue().encode("utf-8")
            else:
                old = path.read_bytes()
                if not old.endswith(b"\n"):
                    old += b"\n"
        buf = io.StringIO()
        _typed(frame).to_csv(buf, index=False, header=not old, lineterminator="\n")
        with atomic_path(path) as tmp:
            tmp.write_bytes(old + buf.getvalue().encode("utf-8"))


def _typed(frame):
    """Integer columns written as integers (pandas would write 3.0 for an int column with gaps)."""
    frame = frame.copy()
    for col in INT_COLUMNS:
        if col in frame:
            frame[col] = pd.to_numeric(frame[col]).astype("Int64")
    return frame


def _header(path):
    with open(path, newline="") as f:
        return next(csv.reader(f), [])


def write_table(path, frame):
    """Write a whole CSV atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


def thread_env(threads):
    """Environment that pins every math library of a child process to `threads` threads."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "FLAGS_paddle_num_threads"):
        env[var] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env
