"""`dualbench bench`: paired, interleaved speed benchmarks of torch vs paddle, resumable, into OUT/bench.csv.

How a run is organised:
- A *cell* is (task, backend, mode, precision, threads, batch size, repeat) and yields one row per loop
  (engine, and bare with --bare), or a time-to-target row (loop "ttt"). Each row has a deterministic
  cell_key; rows are appended atomically right after their cell, and a rerun skips keys already there.
- Per repeat, one worker process per backend is started with the same pinned thread environment and
  only its framework imported; the parent alternates cells between them (A B, then B A for the next
  cell), so machine noise hits both backends alike and order effects cancel.
- A cell that fails (exception, out of memory, crashed worker) or diverges (NaN/Inf loss or weights) is
  recorded too, as rows with status `failed` / `diverged` and the error's last line, and holds no timing;
  the other cells go on. A rerun retries failed cells (ok and diverged ones count as finished); the exit
  code is 1 when a cell failed.
- Statistics (common.stats): per-task ratio torch/paddle over the interleaved pairs, with a 95% CI and
  a verdict faster / same (+-5%) / slower / inconclusive. See benchmarks/report.py for the tables.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from dualbench.common.errors import UserError

# Columns of bench.csv, one row per (cell, loop). Documented in README.md ("bench.csv").
BENCH_COLUMNS = [
    "cell_key",            # deterministic identity of the row; a rerun into the same --out skips these
    "suite",               # default | gpu | the --suite name given
    "task", "backend",     # task name; torch | paddle
    "loop",                # engine: native DataLoader + train step | bare: pre-loaded device tensors | ttt: time to target
    "mode",                # eager | compiled (torch.compile / paddle.jit.to_static)
    "precision",           # fp32 | amp (float16 autocast + GradScaler on GPU)
    "threads",             # math threads of the worker (both frameworks pinned through the environment)
    "batch_size",          # samples per step
    "repeat",              # 1..R: torch and paddle cells with the same repeat form one interleaved pair
    "warmup_steps",        # warm-up steps actually run (excluded from timing; >= --warmup, >= --warmup-seconds)
    "warmup_s",            # seconds of warm-up, first step included
    "first_step_s",        # seconds of the very first step: lazy init, and compilation in compiled mode
    "steps_per_window",    # timed steps per window (auto: enough for --window-seconds)
    "windows",             # timed windows per cell (clock read, after a device sync, only at window edges)
    "samples_per_s",       # steady-state throughput: median over the windows
    "samples_per_s_lo", "samples_per_s_hi",   # 95% order-statistic CI of that median (needs >= 6 windows)
    "ms_per_step",         # median milliseconds per step over the windows
    "ms_per_step_lo", "ms_per_step_hi",
    "reader_ms_per_step",  # engine: time per step spent getting the batch (DataLoader next + to_device); bare: 0
    "compute_ms_per_step", # engine: window time minus reader time, per step; bare: ms_per_step
    "reader_share",        # reader time / window time (median over windows)
    "epoch_samples",       # training samples in one epoch of the task's real dataset (for epoch_seconds)
    "epoch_seconds",       # engine/bare: epoch_samples / samples_per_s; ttt: median measured epoch time
    "peak_mem_mb",         # peak memory of the cell in MiB
    "peak_mem_kind",       # rss: peak resident set of the worker process (CPU) | gpu_allocated: allocator peak
    "target_accuracy",     # ttt: the task's target
    "ttt_seconds",         # ttt: training seconds (evaluation excluded) until the target was reached; NaN if not
    "ttt_epochs",          # ttt: epochs run
    "ttt_acc",             # ttt: accuracy at the last evaluation
    "ttt_reached",         # ttt: True when the target was reached within the epoch budget
    "ttt_eval_split",      # ttt: val | test, the split evaluated after every epoch
    "window_ms_per_step",  # ';'-joined ms/step of every timed window, in order (raw data for re-analysis)
    "seed",                # seeds model init and batch order
    "dataset",             # random-uint8-n<N> (random pixels of the task's shape) or a dataset name
    "dataset_sha256",      # sha256 of the random arrays, or of the dataset files
    "synthetic",           # True for random and synthetic data (speed only; never an accuracy claim)
    "n_samples",           # samples the batches are drawn from
    "batch_order_hash",    # hash of the first epoch's batch order (the same for both backends)
    "load_avg",            # 1-minute load average of the machine when the cell started (busy machine: noisy numbers)
    "cpu_count",           # logical CPUs of the machine
    "framework_version", "device", "device_name",
    "python", "numpy", "platform", "git_commit", "dualbench_version",
    "timestamp", "run_id",
    # appended last, so that files written before they existed are a column subset (read as status ok)
    "status",              # ok | failed: the cell raised or its worker died | diverged: NaN/Inf loss or weights
    "error",               # failed: the error's last line (out of memory names the batch size); diverged: the
                           # step and the last finite loss. Failed and diverged rows hold no timings.
]

MNIST_LIKE, CIFAR_LIKE = (1, 28, 28), (3, 32, 32)
# Training-set sizes of the real datasets, for time per epoch (random data stands in for them).
REFERENCE_TRAIN_SIZES = {"mnist": 60000, "fashion-mnist": 60000, "mnist5k": 4000, "cifar10": 50000,
                         "food11": 9866}
DATASET_CLASSES = {"cifar10": 10, "mnist": 10, "fashion-mnist": 10, "mnist5k": 10, "food11": 11}


@dataclass(frozen=True)
class Suite:
    name: str
    device: str = "cpu"
    shapes: Tuple[Tuple[int, int, int], ...] = (MNIST_LIKE, CIFAR_LIKE)   # tasks chosen by input shape
    conv_only: bool = False       # only tasks with conv layers (the GPU suite: small MLPs measure launch latency)
    batch_sizes: Tuple[Optional[int], ...] = (None,)                   # None: the task's batch size
    modes: Tuple[str, ...] = ("eager",)
    precisions: Tuple[str, ...] = ("fp32",)
    repeats: int = 6
    warmup: int = 3
    warmup_seconds: float = 0.25     # > paddle's OpenMP spin time (KMP_BLOCKTIME 200 ms) of the idle worker
    steps: str = "auto"
    windows: int = 6
    window_seconds: float = 0.06     # short windows, more pairs: the spread is between processes, not windows
    bare: bool = True
    ttt: bool = True
    # Second stage (two-stage design, common.stats.pairs_needed): after `repeats` pairs, configurations
    # whose ratio CI is wider than +-ci_target get the pairs still missing, up to max_repeats, engine loop
    # only, while the whole invocation stays within budget_seconds. ci_target 0 turns it off.
    ci_target: float = 0.03
    max_repeats: int = 40
    budget_seconds: float = 585.0    # timing stops in time for the whole command to end within 10 minutes


SUITES = {
    # MNIST-family and CIFAR-2 tasks on CPU, both backends, with the bare loop and time to target.
    "default": Suite("default"),
    # GPU: larger batches, eager vs compiled, fp32 vs AMP, on the conv tasks.
    "gpu": Suite("gpu", device="gpu", conv_only=True, shapes=(MNIST_LIKE, CIFAR_LIKE, (3, 128, 128)),
                 batch_sizes=(None, 512), modes=("eager", "compiled"), precisions=("fp32", "amp"),
                 repeats=5, warmup=10, warmup_seconds=1.0, window_seconds=0.2, budget_seconds=1800.0),
}


def suite_tasks(suite, names=None):
    """Tasks of the suite: by input shape from the registry (new tasks join automatically), or the
    --tasks list; unknown names are skipped with a note."""
    from dualbench.common.tasks import TASKS
    if names:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in TASKS]
        if unknown:
            print(f"dualbench bench: skipping unknown task(s): {', '.join(unknown)}", file=sys.stderr)
        tasks = [TASKS[n] for n in wanted if n in TASKS]
    elif suite.name in SUITES:
        tasks = [t for t in TASKS.values() if tuple(t.model.input_shape) in suite.shapes
                 and (not suite.conv_only or any(layer.kind == "conv" for layer in t.model.layers))]
    else:   # a family name, e.g. --suite cifar2 or --suite mnist-mlp
        tasks = [t for t in TASKS.values() if t.name.startswith(suite.name)]
    if not tasks:
        raise UserError(f"no tasks to benchmark (suite '{suite.name}', --tasks {names!r})")
    return tasks


def epoch_samples(task):
    """Training samples per epoch with the task's real dataset, or None when its size is unknown."""
    size = REFERENCE_TRAIN_SIZES.get(task.data.dataset)
    if size is None:
        return None
    if task.data.classes is not None:
        size = size * len(task.data.classes) // DATASET_CLASSES.get(task.data.dataset, 10)
    return int(round(size * (1 - task.protocol.val_fraction)))


def ttt_dataset(task):
    """The dataset for time to target: the task's own if on this machine, else a synthetic one of its shape."""
    from dualbench.common.data.sources import DATASETS, locate
    try:
        if locate(task.data.dataset) is not None:
            return task.data.dataset
    except UserError:
        pass
    candidates = [f"synthetic-{task.data.dataset}"] + [n for n, info in DATASETS.items() if info.synthetic
                                                       and tuple(info.shape) == tuple(task.model.input_shape)]
    for name in candidates:
        info = DATASETS.get(name)
        if info is not None and info.synthetic and tuple(info.shape) == tuple(task.model.input_shape):
            return name
    return None


RANDOM_DATA_BYTES = 2 ** 28   # random float32 data per task: 256 MiB at most (Food-11 images are 196 KB each)


def random_samples(task, batch_size, wanted):
    """Samples of random data for a task: `wanted`, capped by memory, but always >= 4 batches."""
    per_sample = 4 * int(np.prod(task.model.input_shape))
    return int(min(wanted, max(4 * batch_size, RANDOM_DATA_BYTES // per_sample)))


def cell_key(cell, loop):
    """Everything that identifies a row: a changed setting makes a new key, never a silent mix."""
    base = (f"{cell['suite']}|{cell['task']}|{cell['backend']}|{cell['device']}|{cell['mode']}|{cell['precision']}"
            f"|t{cell['threads']}|b{cell['batch_size']}|{loop}|r{cell['repeat']}|seed{cell['seed']}")
    if loop == "ttt":
        return base + f"|{cell['dataset']}|e{cell['max_epochs']}"
    return (base + f"|w{cell['warmup']}/{cell['warmup_seconds']}s|s{cell['steps']}/{cell['window_seconds']}s"
                   f"|k{cell['windows']}|{cell['dataset'] or 'random'}|n{cell['samples']}")


def config_id(cell):
    """The configuration a ratio is computed for: every cell setting except the backend and the repeat."""
    return (cell["task"], cell["batch_size"], cell["mode"], cell["precision"], cell["threads"])


def plan(suite, tasks, backend_names, threads_list, run_id, seed=0, samples=10000, dataset=None, extra=None):
    """Groups of cells in execution order: one group per (threads, repeat), cells alternating backends.

    extra: {config_id: total pairs} for the second stage: repeats suite.repeats+1 .. up to each
    configuration's total, speed cells of those configurations only, engine loop only, no time to target.
    """
    groups = []
    repeats = range(1, suite.repeats + 1)
    if extra is not None:
        repeats = range(suite.repeats + 1, max(extra.values(), default=suite.repeats) + 1)
    for threads in threads_list:
        for repeat in repeats:
            cells, flip = [], repeat % 2 == 0
            for task in tasks:
                configs = [(bs or task.protocol.batch_size, mode, prec) for bs in suite.batch_sizes
                           for mode in suite.modes for prec in suite.precisions]
                kinds = [("speed", cfg) for cfg in dict.fromkeys(configs)]
                ttt_data = ttt_dataset(task) if suite.ttt and task.target_accuracy else None
                if ttt_data and extra is None:
                    kinds.append(("ttt", (task.protocol.batch_size, "eager", "fp32")))
                for kind, (batch_size, mode, precision) in kinds:
                    if extra is not None and extra.get((task.name, batch_size, mode, precision, threads), 0) < repeat:
                        continue
                    order = list(reversed(backend_names)) if flip else list(backend_names)
                    flip = not flip
                    for name in order:
                        cell = {"kind": kind, "suite": suite.name, "task": task.name, "backend": name,
                                "device": suite.device, "mode": mode, "precision": precision, "threads": threads,
                                "batch_size": batch_size, "repeat": repeat, "seed": seed, "run_id": run_id}
                        if kind == "speed":
                            loops = ["engine", "bare"] if suite.bare and extra is None else ["engine"]
                            cell.update(warmup=suite.warmup, warmup_seconds=suite.warmup_seconds,
                                        steps=suite.steps, windows=suite.windows,
                                        window_seconds=suite.window_seconds, dataset=dataset,
                                        samples=random_samples(task, batch_size, samples),
                                        epoch_samples=epoch_samples(task), loops=loops)
                        else:
                            cell.update(dataset=ttt_data, max_epochs=task.protocol.epochs, loops=["ttt"])
                        cell["keys"] = {loop: cell_key(cell, loop) for loop in cell["loops"]}
                        cells.append(cell)
            if cells:
                groups.append({"threads": threads, "repeat": repeat, "cells": cells})
    return groups


def second_stage_pairs(csv_path, first_stage, suite):
    """{config_id: total pairs} for the configurations of the first-stage plan whose ratio CI misses
    +-suite.ci_target: the pairs the first stage's spread asks for (common.stats.pairs_needed).

    Only the first stage's own engine rows count (their cell keys), so a resumed run plans the same."""
    import pandas as pd

    from dualbench.report import measured
    from dualbench.common.results import read_csv
    from dualbench.common.stats import pairs_needed, paired_ratio_ci, ratio_halfwidth
    if not csv_path.exists() or csv_path.stat().st_size == 0:
        return {}
    where = {c["keys"]["engine"]: (config_id(c), c["backend"], c["repeat"])
             for g in first_stage for c in g["cells"] if "engine" in c["keys"]}
    frame = read_csv(csv_path, BENCH_COLUMNS)
    frame = measured(frame[frame["cell_key"].astype(str).isin(where)])   # ok rows, one per cell: as the report counts
    values = pd.DataFrame([(*where[k], v) for k, v in zip(frame["cell_key"], frame["samples_per_s"])],
                          columns=["config", "backend", "repeat", "sps"])
    out = {}
    for config, rows in values.groupby("config", sort=False):
        table = rows.pivot(index="repeat", columns="backend", values="sps").dropna()
        if not {"torch", "paddle"} <= set(table.columns) or len(table) < 2:
            continue
        t, p = table["torch"].to_numpy(float), table["paddle"].to_numpy(float)
        ci = paired_ratio_ci(t, p)
        if ratio_halfwidth(ci["ratio"], ci["lo"], ci["hi"]) <= suite.ci_target:
            continue
        total = pairs_needed(np.log(t) - np.log(p), suite.ci_target, suite.max_repeats)
        if total and total > suite.repeats:
            out[config] = total
    return out


def row_status(frame):
    """Each row's status; empty (rows written before the column existed) reads as ok."""
    if "status" not in frame:
        import pandas as pd
        return pd.Series("ok", index=frame.index, dtype=object)
    return frame["status"].fillna("ok").astype(str).replace("", "ok")


def recorded_keys(csv_path):
    """(finished, failed) cell_keys in bench.csv. Finished: measured (ok) or diverged, skipped by a rerun;
    failed: keys with only failed rows, which a rerun retries."""
    from dualbench.common.results import read_csv
    if not csv_path.exists() or csv_path.stat().st_size == 0:
        return set(), set()
    frame = read_csv(csv_path, BENCH_COLUMNS)
    failed = row_status(frame) == "failed"
    done = set(frame.loc[~failed, "cell_key"].astype(str))
    return done, set(frame.loc[failed, "cell_key"].astype(str)) - done


def done_keys(csv_path):
    """cell_keys finished in bench.csv (ok or diverged); failed cells are not, so a rerun retries them."""
    return recorded_keys(csv_path)[0]


def problem_rows(cell, status, error):
    """Rows for a cell that failed or diverged: its identity and the error, one per pending loop, no timings.

    The configuration columns match what the worker writes for a measured cell (the dataset name of
    random data included), so the report groups them with the measured cells of the same configuration.
    """
    from dualbench.common.results import host_metadata, now
    dataset = cell.get("dataset") or f"random-uint8-n{cell['samples']}"
    base = {k: cell[k] for k in ("suite", "task", "backend", "mode", "precision", "threads", "batch_size", "repeat",
                                 "seed", "run_id", "device")}
    base.update({"dataset": dataset, "status": status, "error": error, "timestamp": now(),
                 "load_avg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "cpu_count": os.cpu_count(),
                 **host_metadata()})
    return [{**base, "loop": loop, "cell_key": cell["keys"][loop]} for loop in cell["loops"]]


def pending_cells(groups, done):
    """Drop finished loops from every cell (and cells with none left); a crash mid-cell reruns it."""
    out = []
    for group in groups:
        cells = []
        for cell in group["cells"]:
            loops = [loop for loop in cell["loops"] if cell["keys"][loop] not in done]
            if loops:
                cells.append({**cell, "loops": loops})
        if cells:
            out.append({**group, "cells": cells})
    return out


class Worker:
    """A bench_worker child process for one backend: cells in on stdin, JSON results back on a pipe."""

    def __init__(self, backend, threads):
        from dualbench.worker import PARENT_ENV
        from dualbench.common.results import thread_env
        read_fd, write_fd = os.pipe()
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dualbench.bench_worker", backend, str(write_fd)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.log, pass_fds=(write_fd,),
            env={**thread_env(threads), PARENT_ENV: str(os.getpid())}, cwd=Path(__file__).resolve().parent.parent,
            text=True, start_new_session=True)   # Ctrl-C reaches only the parent, which stops the workers itself
        os.close(write_fd)
        self.results = os.fdopen(read_fd, "r")
        self.backend = backend
        self.started = False

    def wait_ready(self):
        """Block until the worker has imported its framework (a dead worker: its first cell reports it)."""
        if not self.started:
            self.started = True
            self.results.readline()

    def run(self, cell):
        """Send a cell, wait for its reply; when the worker died, a failed reply naming how (its log
        tail is printed)."""
        self.wait_ready()
        try:
            self.proc.stdin.write(json.dumps(cell) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        line = self.results.readline()
        if not line:
            self.proc.wait()
            self.log.seek(0)
            tail = self.log.read().strip().splitlines()[-5:]
            print(f"dualbench bench: {self.backend} worker died (exit code {self.proc.returncode}):\n  "
                  + "\n  ".join(tail), file=sys.stderr)
            return {"error": death_line(self.proc.returncode, tail, cell), "died": True}
        return json.loads(line)

    def close(self, kill=False):
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                try:
                    self.proc.stdin.close()
                except BrokenPipeError:
                    pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.results.close()
        self.log.close()


def death_line(returncode, log_tail, cell):
    """One line for a worker that died without replying: the signal or exit code, and its last log line."""
    last = next((line.strip() for line in reversed(log_tail) if line.strip()), "")
    if returncode is not None and returncode < 0:
        how = f"worker killed by signal {-returncode}"
        if -returncode == 9:   # SIGKILL: most often the kernel's out-of-memory killer
            how += (f" (possibly out of memory at batch size {cell.get('batch_size')}; "
                    "try a smaller --batch-size)")
    else:
        how = f"worker exited with code {returncode}"
    return how + (f": {last}" if last else "")


def cell_seconds(durations, cell):
    """Expected seconds of a cell: the median of the same task, backend and kind in this invocation."""
    same = durations.get((cell["task"], cell["backend"], cell["kind"]))
    if same:
        return float(np.median(same))
    everything = [v for values in durations.values() for v in values]
    return float(np.median(everything)) if everything else 2.0


WORKER_START_SECONDS = 3.0   # importing a framework in a new worker, added to a group's estimate


def execute(groups, csv_path, progress=True, durations=None, deadline=None, desc="bench"):
    """Run every pending cell; append its rows atomically as soon as it finishes, a failed or diverged
    cell's too. Returns ([(cell, status, error)] of the cells that failed or diverged, groups not started).

    durations: {(task, backend, kind): [seconds]} filled as cells finish; deadline: a perf_counter time
    no group may be expected to run past (estimated from `durations`), the rest is returned unstarted."""
    from tqdm import tqdm

    from dualbench.common.results import append_rows
    durations = {} if durations is None else durations
    total = sum(len(g["cells"]) for g in groups)
    bar = tqdm(total=total, unit="cell", file=sys.stderr, disable=not progress, desc=desc)
    problems = []
    for index, group in enumerate(groups):
        if deadline is not None:
            expected = WORKER_START_SECONDS + sum(cell_seconds(durations, c) for c in group["cells"])
            if time.perf_counter() + expected > deadline:
                bar.close()
                return problems, groups[index:]
        workers, interrupted = {}, True
        try:
            # Start the group's workers together and wait until both frameworks are imported: the imports
            # overlap (measured: 2.0 s for both instead of 1.9 + 1.3 s one after the other) and none runs while a
            # cell is timed.
            for name in dict.fromkeys(c["backend"] for c in group["cells"]):
                workers[name] = Worker(name, group["threads"])
            for worker in workers.values():
                worker.wait_ready()
            for cell in group["cells"]:
                name = cell["backend"]
                bar.set_postfix_str(f"r{cell['repeat']} {cell['task']} {name} {cell['mode']} {cell['precision']} "
                                    f"b{cell['batch_size']}", refresh=False)
                started = time.perf_counter()
                if name not in workers:
                    workers[name] = Worker(name, group["threads"])
                reply = workers[name].run(cell)
                if reply.get("died"):      # a crashed worker: restart it for the next cell
                    workers.pop(name).close(kill=True)
                if "error" in reply:
                    status = "diverged" if reply.get("diverged") else "failed"
                    problems.append((cell, status, reply["error"]))
                    append_rows(csv_path, problem_rows(cell, status, reply["error"]), BENCH_COLUMNS)
                    bar.write(f"dualbench bench: {cell['task']} {name} {cell['kind']} repeat {cell['repeat']} "
                              f"{status}: {reply['error']}")
                else:
                    append_rows(csv_path, reply["rows"], BENCH_COLUMNS)
                    durations.setdefault((cell["task"], name, cell["kind"]), []).append(time.perf_counter() - started)
                bar.update(1)
            interrupted = False
        finally:   # Ctrl-C / SIGTERM: kill the workers, so that the cell in flight is never written
            for worker in workers.values():
                worker.close(kill=interrupted)
    bar.close()
    return problems, []


def second_stage(first, suite, tasks, backend_names, threads_list, run_id, seed, samples, dataset, csv_path,
                 durations, deadline, progress):
    """More pairs for the configurations whose ratio CI is wider than +-ci_target after the first stage
    (`first`, its plan), one repeat at a time for all of them (so the ones needing few pairs finish first),
    until each has its planned pairs or the time budget ends. Returns the problems of its cells."""
    extra = second_stage_pairs(csv_path, first, suite)
    if not extra:
        return []
    target = f"±{suite.ci_target:.0%}"
    wanted = ", ".join(f"{config[0]} {total}" for config, total in extra.items())
    print(f"dualbench bench: second stage, {len(extra)} configuration(s) wider than {target}; "
          f"pairs planned: {wanted}", file=sys.stderr)
    groups = pending_cells(plan(suite, tasks, backend_names, threads_list, run_id, seed, samples, dataset, extra),
                           recorded_keys(csv_path)[0])
    problems, left = execute(groups, csv_path, progress, durations, deadline, desc="bench, second stage")
    if left:
        short = sorted({c["task"] for g in left for c in g["cells"]})
        print(f"dualbench bench: time budget of {suite.budget_seconds:.0f} s reached before repeat {left[0]['repeat']}; "
              f"fewer pairs than planned for: {', '.join(short)} (rerun the command to add them)", file=sys.stderr)
    return problems


def bench(suite, tasks, backend_names, out_dir, threads_list, seed=0, samples=10000, dataset=None, progress=True):
    """Plan, skip finished cells, run the rest (first stage, then the second stage within the time
    budget), print the ratio summary. Returns the bench.csv path. Holds the lock on OUT throughout."""
    from dualbench.common.fsutil import folder_lock
    with folder_lock(out_dir, "bench"):
        return _bench(suite, tasks, backend_names, out_dir, threads_list, seed, samples, dataset, progress)


def _bench(suite, tasks, backend_names, out_dir, threads_list, seed, samples, dataset, progress):
    from dualbench import backends
    from dualbench.engine import new_run_id
    for name in backend_names:
        backends.require(name)
    csv_path = Path(out_dir) / "bench.csv"
    run_id = new_run_id()
    groups = plan(suite, tasks, backend_names, threads_list, run_id, seed, samples, dataset)
    done, retried = recorded_keys(csv_path)
    todo = pending_cells(groups, done)
    n_all, n_todo = sum(len(g["cells"]) for g in groups), sum(len(g["cells"]) for g in todo)
    n_retry = sum(1 for g in todo for c in g["cells"] if any(c["keys"][loop] in retried for loop in c["loops"]))
    if n_todo < n_all or n_retry:
        print(f"dualbench bench: resuming, {n_all - n_todo} of {n_all} cells already in {csv_path}"
              + (f"; retrying {n_retry} failed cell(s)" if n_retry else ""), file=sys.stderr)
    started = time.perf_counter()
    durations = {}
    problems, _ = execute(todo, csv_path, progress, durations)
    if suite.ci_target > 0 and set(backend_names) == {"torch", "paddle"}:
        problems += second_stage(groups, suite, tasks, backend_names, threads_list, run_id, seed, samples, dataset,
                                 csv_path, durations, started + suite.budget_seconds, progress)
    elapsed = time.perf_counter() - started
    if csv_path.exists():
        from dualbench.report import print_speed_summary
        print_speed_summary(csv_path)
    print(f"{sum(len(v) for v in durations.values()) + len(problems)} cells in {elapsed:.0f} s; rows in {csv_path}")
    n_failed = sum(1 for _, status, _ in problems if status == "failed")
    n_diverged = len(problems) - n_failed
    if n_diverged:
        print(f"dualbench bench: {n_diverged} cell(s) diverged (status 'diverged' in {csv_path}; excluded from "
              "the ratios)", file=sys.stderr)
    if n_failed:
        print(f"dualbench bench: {n_failed} cell(s) failed (status 'failed' in {csv_path}); rerun the same "
              "command to retry them", file=sys.stderr)
        raise SystemExit(1)
    return csv_path


def parse_int_list(text, option):
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{option} must be comma-separated integers, got '{text}'") from None
    if not values or min(values) < 1:
        raise UserError(f"{option} must be positive integers, got '{text}'")
    return values


def suite_from_args(args):
    """The named suite with the command-line overrides applied (each override is a column of the grid)."""
    base = SUITES.get(args.suite) or replace(SUITES["default"], name=args.suite)
    changes = {}
    if args.device:
        changes["device"] = args.device
    if args.batch_size:
        changes["batch_sizes"] = tuple(parse_int_list(args.batch_size, "--batch-size"))
    if args.compile:
        changes["modes"] = ("eager", "compiled")
    if args.amp:
        changes["precisions"] = ("fp32", "amp")
    for option in ("repeats", "warmup", "windows"):
        value = getattr(args, option)
        if value is not None:
            if value < (0 if option == "warmup" else 1):
                raise UserError(f"--{option} must be at least {0 if option == 'warmup' else 1}, got {value}")
            changes[option] = value
    if args.steps is not None:
        if args.steps != "auto":
            parse_int_list(args.steps, "--steps")
        changes["steps"] = args.steps
    for option in ("warmup_seconds", "window_seconds"):
        value = getattr(args, option)
        if value is not None:
            if value < 0:
                raise UserError(f"--{option.replace('_', '-')} must not be negative, got {value}")
            changes[option] = value
    if args.ci_target is not None:
        if not 0 <= args.ci_target < 100:
            raise UserError(f"--ci-target is a percentage in [0, 100), got {args.ci_target}")
        changes["ci_target"] = args.ci_target / 100
    if args.max_repeats is not None:
        if args.max_repeats < 1:
            raise UserError(f"--max-repeats must be at least 1, got {args.max_repeats}")
        changes["max_repeats"] = args.max_repeats
    if args.budget_minutes is not None:
        if args.budget_minutes < 0:
            raise UserError(f"--budget-minutes must not be negative, got {args.budget_minutes}")
        changes["budget_seconds"] = 60 * args.budget_minutes
    if args.bare:
        changes["bare"] = True
    if args.no_bare:
        changes["bare"] = False
    if args.no_ttt:
        changes["ttt"] = False
    suite = replace(base, **changes)
    if "amp" in suite.precisions and suite.device == "cpu":
        raise UserError("--amp is measured on GPU only (paddle's auto_cast has no effect on CPU, so a CPU "
                        "comparison would be float32 against bfloat16); use --device gpu")
    return suite


def cmd_bench(args):
    from dualbench import backends
    suite = suite_from_args(args)
    names = backends.parse_backends(args.backends)
    threads = parse_int_list(args.threads, "--threads") if args.threads else [os.cpu_count() or 1]
    if args.dataset:
        from dualbench.common.data.sources import get_info
        get_info(args.dataset)
    tasks = suite_tasks(suite, args.tasks)
    if args.dataset:
        from dualbench.common.data.sources import get_info
        shape = tuple(get_info(args.dataset).shape)
        skipped = [t.name for t in tasks if tuple(t.model.input_shape) != shape]
        if skipped:
            print(f"dualbench bench: skipping tasks whose input is not {shape}: {', '.join(skipped)}", file=sys.stderr)
        tasks = [t for t in tasks if tuple(t.model.input_shape) == shape]
        if not tasks:
            raise UserError(f"no task takes {shape} inputs from dataset '{args.dataset}'")
    bench(suite, tasks, names, args.out, threads, seed=args.seed, samples=args.samples, dataset=args.dataset,
          progress=not args.no_progress)


def register(subparsers):
    p = subparsers.add_parser(
        "bench", help="paired torch/paddle speed benchmark (interleaved repeats, CIs), rows into OUT/bench.csv",
        description="Time each backend in its own worker process with equal thread settings, interleaved "
                    "repeat by repeat. Reruns into the same --out resume, skipping finished cells.")
    p.add_argument("--suite", default="default",
                   help="default (MNIST-family + CIFAR-2 tasks on CPU), gpu (larger batches, AMP, compile), "
                        "or a task-name prefix such as cifar2 (default: default)")
    p.add_argument("--tasks", "--task", dest="tasks", help="comma-separated task names (unknown names are skipped)")
    p.add_argument("--backends", "--backend", dest="backends", default="torch,paddle")
    p.add_argument("--device", choices=["cpu", "gpu", "auto"], help="default: the suite's (cpu; gpu for --suite gpu)")
    p.add_argument("--batch-size", help="batch size(s), comma list for a sweep (default: each task's)")
    p.add_argument("--steps", help="timed steps per window, or auto (default: enough for the suite's window time)")
    p.add_argument("--windows", type=int, help="timed windows per cell (default 6; >= 6 gives a per-cell 95%% CI)")
    p.add_argument("--warmup", type=int, help="warm-up steps excluded from timing (default 3, and at least 0.25 s)")
    p.add_argument("--warmup-seconds", type=float, help="minimum warm-up time per cell (default 0.25; lets the other "
                                                         "worker's idle threads stop spinning)")
    p.add_argument("--window-seconds", type=float, help="target time of one window with --steps auto (default 0.06)")
    p.add_argument("--repeats", type=int, help="interleaved repeats per backend, i.e. pairs for the ratio CI (default 6)")
    p.add_argument("--ci-target", type=float, help="second stage: more pairs for configurations whose ratio CI "
                                                    "is wider than +-this percentage (default 3; 0 turns it off)")
    p.add_argument("--max-repeats", type=int, help="second stage: at most this many pairs per configuration (default 40)")
    p.add_argument("--budget-minutes", type=float, help="second stage: start no repeat expected to end past this "
                                                         "wall time of the invocation (default 9.75; gpu suite 30)")
    p.add_argument("--threads", help=f"math threads per worker, comma list for a sweep (default {os.cpu_count()})")
    p.add_argument("--compile", action="store_true", help="also time compiled mode (torch.compile / paddle.jit.to_static)")
    p.add_argument("--amp", action="store_true", help="also time AMP (float16 + GradScaler; GPU only)")
    p.add_argument("--bare", action="store_true", help="also time a bare loop over pre-loaded tensors (on in the "
                                                        "default suite) for the harness overhead")
    p.add_argument("--no-bare", action="store_true", help="skip the bare loop")
    p.add_argument("--no-ttt", action="store_true", help="skip time-to-target cells")
    p.add_argument("--dataset", help="draw batches from this dataset instead of random arrays of the task's shape")
    p.add_argument("--samples", type=int, default=10000, help="random samples to draw batches from (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs"), help="output folder (default: runs/)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_bench)
