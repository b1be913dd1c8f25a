"""bench.csv: its columns and how its rows are read, shared by `dualbench bench` (which writes and
resumes it) and `dualbench report` (which summarises it). No torch, no paddle here."""
import os

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
    "stage",               # equal: both backends at one shared setting | tune: one candidate setting of one
                           # backend (chooses its winner, never part of a verdict) | best: each at its winner
                           # | aa: a framework against itself at the equal setting (the noise floor, in no ratio)
    "knobs",               # framework switches the cell set, e.g. onednn=on (CPU), cudnn_benchmark/tf32 (GPU);
                           # empty: each framework's defaults (the equal stage)
    "latency_ms",          # infer: median milliseconds per batch (one clock read around each call)
    "latency_ms_lo", "latency_ms_hi",   # 95% order-statistic CI of that median
    "p95_ms",              # infer: 95th percentile of the per-call latency
    "p95_ms_lo", "p95_ms_hi",           # its 95% order-statistic CI (NaN with fewer than ~59 calls)
    "infer_calls",         # infer: timed calls
    "model_spec",          # a model pair's SPECs, input shape, classes, optimizer and lr; empty for built-in tasks
    "knobs_in_effect",     # the switches' values during the cell, defaults included (torch onednn=on, paddle off)
    # empty in older files, which the report reads as one node
    "node",                # host name of the machine the cell ran on (--executor ray: a node of the cluster)
    "node_hardware",       # that machine's CPUs, memory and GPUs in one line
    # empty in older files (no A/A pairs; the worker's process id was not recorded)
    "aa_side",             # stage aa: a | b, the two worker processes of one framework timed against each other
    "worker_pid",          # process id of the worker that timed the cell (the two sides of an A/A pair differ)
]

# second_stage.csv beside bench.csv: what the second stage decided per configuration wider than the target
# (the report says why a configuration got no more pairs). One row per configuration and invocation.
SECOND_STAGE_COLUMNS = [
    "suite", "task", "kind", "batch_size", "stage", "pairing", "model_spec",
    "pairs",               # first-stage pairs the decision saw
    "spread_pct",          # their per-pair spread: 100 x SD of log(torch/paddle)
    "aa_spread_pct",       # the A/A spread of the run (pooled); empty without A/A pairs
    "pairs_needed",        # pairs a CI within +-target needs at that spread (not capped by --max-repeats)
    "pairs_planned",       # total pairs the first stage's spread asks for (capped by --max-repeats)
    "pairs_fit",           # pairs of this configuration alone that fit in the time left
    "decision",            # added | machine noise (spread about the A/A spread, the pairs needed do not fit)
                           # | does not fit (the planned pairs do not fit)
    "target_pct", "run_id", "timestamp",
]
# second_stage.csv's decisions: the second stage writes them, the report turns them into notes
ADDED, MACHINE_NOISE, NO_FIT = "added", "machine noise", "does not fit"
# pairs_needed's cap for second_stage.csv's pairs_needed and the report's "pairs for ±3%": not --max-repeats,
# so they say how many pairs a target needs however many that is (shown as "≥ 100,000" at the cap)
NEEDED_CAP = 100000



PAIR_DISTINCT_BATCHES = 4  # a model pair's random batches (224x224 images: 19 MB per batch of 32)


def pair_dataset(batch_size):
    """The dataset name a model pair's rows record: its seeded standard-normal batches."""
    return f"random-normal-n{PAIR_DISTINCT_BATCHES * int(batch_size)}"


def pair_label(pair):
    """A model pair's identity as bench.csv records it: both SPECs and everything its cells are built from
    (two pairs that differ in any of these never share a ratio); '' for a built-in task."""
    if not pair:
        return ""
    shape = ",".join(str(d) for d in pair["input"])
    return (f"torch {pair['torch']} | paddle {pair['paddle']} | input {shape} | classes {pair['classes']} | "
            f"{pair['optimizer']} lr {pair['lr']:g}")


def row_status(frame):
    """Each row's status; empty (rows written before the column existed) reads as ok."""
    if "status" not in frame:
        import pandas as pd
        return pd.Series("ok", index=frame.index, dtype=object)
    return frame["status"].fillna("ok").astype(str).replace("", "ok")


def read_bench(csv_path):
    """bench.csv's rows in today's columns, or None when the file is absent or empty."""
    from dualbench.common.results import read_csv
    if not csv_path.exists() or csv_path.stat().st_size == 0:
        return None
    return read_csv(csv_path, BENCH_COLUMNS)


def recorded_keys(csv_path):
    """(finished, failed) cell_keys in bench.csv. Finished: measured (ok) or diverged, skipped by a rerun;
    failed: keys with only failed rows, which a rerun retries."""
    return recorded_keys_of(read_bench(csv_path))


def recorded_keys_of(frame):
    """recorded_keys of bench.csv's rows already read (read_bench; None: no rows)."""
    if frame is None:
        return set(), set()
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
    dataset = cell.get("dataset") or (pair_dataset(cell["batch_size"]) if cell.get("pair")
                                      else f"random-uint8-n{cell['samples']}")
    base = {k: cell.get(k) for k in ("suite", "task", "backend", "mode", "precision", "threads", "batch_size",
                                     "repeat", "seed", "run_id", "device", "stage", "knobs", "aa_side")}
    base["model_spec"] = pair_label(cell.get("pair"))
    base.update({"dataset": dataset, "status": status, "error": error, "timestamp": now(),
                 "load_avg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "cpu_count": os.cpu_count(),
                 **host_metadata()})
    return [{**base, "loop": loop, "cell_key": cell["keys"][loop]} for loop in cell["loops"]]



def latest(frame, keys):
    """The last row (by timestamp, then file order) per key: reruns supersede older rows."""
    if "timestamp" in frame:
        frame = frame.sort_values("timestamp", kind="stable")
    return frame.drop_duplicates(keys, keep="last")


def measured(bench):
    """The bench rows that hold timings: status ok (empty in files written before the column existed),
    one per cell and loop: a repeated row (two commands appending at once before the folder lock, or
    concatenated files) would count a repeat twice, so the first one recorded is kept."""
    ok = bench[row_status(bench) == "ok"]
    return ok.drop_duplicates([c for c in ("cell_key", "loop") if c in ok], keep="first")


