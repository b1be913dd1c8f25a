"""Bench worker: one framework per process; times the cells the parent sends, one at a time.

`python -m dualbench.bench_worker BACKEND RESULT_FD`. Writes {"ready": true} to RESULT_FD once its
framework is imported (or failed to import), then reads cells as JSON lines on stdin until EOF; for
each cell writes one JSON line to file descriptor RESULT_FD: {"rows": [...]}, {"error": "...", "user": bool}
(the error's last line; out of memory names the batch size), or {"error": "...", "diverged": true} when the
loss or the weights became NaN/Inf. A framework that cannot be imported answers every cell with its error.
Framework output on stdout/stderr never mixes with results. The parent keeps one worker per backend
alive for a repeat and alternates between them, so backends are interleaved task by task while each
framework is imported once per repeat.

Cell kinds (all framework-blind; they call backends.<name>.{device,models,train,data,speed}):
- "speed": warm-up, then `windows` timed windows of `steps` steps through the native DataLoader (loop
  "engine"), optionally alternating with windows over pre-loaded device tensors (loop "bare") on the
  same model, optimizer and batch size. The device is synchronised before every clock read.
- "infer": inference latency: eval mode, no autograd, one batch per call over pre-loaded device
  tensors, the device synchronised and the clock read around every call; median and 95th percentile
  with order-statistic CIs (loop "infer").
- "ttt": time to target accuracy: train epochs through the engine's train_epoch until the evaluation
  accuracy reaches the task's target (or the epoch budget runs out).
A cell names a built-in task, or carries "pair" (two model SPECs, an input shape, classes, optimizer):
a user's model pair, trained on seeded random inputs and labels over pre-loaded tensors (loop "bare",
there is no dataset to read). Every cell first applies its settings: threads, and the knobs (oneDNN,
cuDNN autotuning, TF32) through backends.<name>.speed.apply_settings; the row records what was in effect.
Divergence: the loss is read (outside the timed region) after every warm-up step and at the end of every
window, the weights at the end of the cell; a NaN/Inf stops the cell, which then measured nothing.
"""
import hashlib
import importlib
import json
import math
import os
import sys
import time
import traceback

import numpy as np

from dualbench import backends
from dualbench.worker import die_with_parent, error_line
from dualbench.common.data.sources import load_dataset
from dualbench.common.data.split import epoch_batches, eval_batches, normalize, order_hash, prepare_splits
from dualbench.common.errors import UserError
from dualbench.common.results import host_metadata, now
from dualbench.common.bench_settings import knobs_text, parse_knobs
from dualbench.common.bench_table import PAIR_DISTINCT_BATCHES, pair_dataset, pair_label
from dualbench.common.stats import median_ci, quantile_ci
from dualbench.common.tasks import get_task

MAX_AUTO_STEPS = 2000     # cap on auto-sized windows (a window of a tiny model at ~0.3 ms/step)
BARE_DISTINCT_BATCHES = 16
INFER_MIN_CALLS, INFER_MAX_CALLS = 20, 5000
OOM_ADVICE = "try a smaller --batch-size"


class Diverged(Exception):
    """The loss (or a weight) became NaN/Inf: the cell stops; its message is what bench.csv records."""

    def __init__(self, step, loss, last_finite=None, last_step=None, window=1):
        where = f"at step {step}" if window <= 1 else f"within steps {step - window + 1}-{step}"
        text = f"diverged {where}: loss {loss}"
        if last_finite is not None:
            text += f"; last finite loss {last_finite:.6g}" + (f" at step {last_step}" if last_step else "")
        super().__init__(text)
        self.step, self.last_finite = step, last_finite


class LossWatch:
    """Counts training steps (warm-up, engine and bare, all on the same model) and checks the loss
    returned by the last step of each window; only the window's last loss is read (one host copy)."""

    def __init__(self):
        self.steps, self.last_finite, self.last_step = 0, None, None

    def check(self, loss, steps):
        self.steps += steps
        value = float(loss)
        if not math.isfinite(value):
            raise Diverged(self.steps, value, self.last_finite, self.last_step, window=steps)
        self.last_finite, self.last_step = value, self.steps

    def check_weights(self, backend, model):
        if not backend.train.parameters_finite(model):
            raise Diverged(self.steps, "finite, weights not", self.last_finite, self.last_step)


class BatchOrder:
    """Lazy, endless-enough sequence of index batches: epoch after epoch of the common seeded order."""

    def __init__(self, n, batch_size, seed, length):
        self.n, self.batch_size, self.seed, self.length = n, batch_size, seed, length
        self.per_epoch = n // batch_size
        self._epoch, self._batches = None, None

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        if not 0 <= i < self.length:
            raise IndexError(i)
        epoch = i // self.per_epoch + 1
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, epoch_batches(self.n, self.batch_size, self.seed, epoch, True)
        return self._batches[i % self.per_epoch]


def cached(cache, key, make):
    """The cache holds one dataset at a time: a new key drops the previous arrays before `make` builds
    the new ones, so a worker that benchmarks many tasks never holds more than one copy of a dataset and
    each cell's peak RSS is its own task's, not an accumulation of the tasks before it."""
    if key not in cache:
        cache.clear()
        cache[key] = make()
    return cache[key]


def random_data(task, n, seed, cache):
    """Uniform random uint8 pixels of the task's input shape, normalised as the task does, random labels.

    Speed does not depend on pixel values; the arrays are large enough (n samples) that batches are
    gathered from main memory as with a real dataset. Only the normalised float32 copy is kept.
    """
    def make():
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, size=(n, *task.model.input_shape), dtype=np.uint8)
        labels = rng.integers(0, task.num_classes, size=n).astype(np.int64)
        digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
        return normalize(images, *task.data.normalize), labels, digest

    key = ("random", tuple(task.model.input_shape), task.num_classes, n, seed, tuple(task.data.normalize))
    x, labels, digest = cached(cache, key, make)
    return x, labels, {"dataset": f"random-uint8-n{n}", "dataset_sha256": digest, "synthetic": True}


def dataset_splits(task, name, cache):
    """A named dataset (real or synthetic), prepared for the task (its normalisation, classes, split)."""
    def make():
        dataset = load_dataset(name)
        meta = {"dataset": dataset.name, "dataset_sha256": dataset.sha256, "synthetic": dataset.synthetic}
        return prepare_splits(dataset, task), meta

    return cached(cache, ("dataset", name, task.name), make)


def bench_data(task, cell, cache):
    if cell.get("dataset") in (None, "", "random"):
        return random_data(task, int(cell["samples"]), int(cell["seed"]), cache)
    splits, meta = dataset_splits(task, cell["dataset"], cache)
    return splits.train_x, splits.train_y, meta


def pair_workload(cell, backend_name, cache):
    """A model pair's side for this backend: (task, build_model, x, y, data meta). The model comes from the
    SPEC (dualbench.model_loader), the task is the plain protocol the pair parity uses (one loss, one
    optimizer); inputs are seeded standard-normal arrays, labels random classes, the same for both backends."""
    from dualbench.model_loader import model_factory
    from dualbench.parity.pair import pair_task
    pair, batch_size, seed = cell["pair"], int(cell["batch_size"]), int(cell["seed"])
    factory, _ = model_factory(pair[backend_name], backend_name, seed)
    task = pair_task(cell["task"], "ce", pair["optimizer"], float(pair["lr"]), batch_size)

    def make():
        n = PAIR_DISTINCT_BATCHES * batch_size
        rng = np.random.default_rng([seed, 1234])
        x = rng.standard_normal((n, *pair["input"])).astype(np.float32)
        y = rng.integers(0, int(pair["classes"]), n).astype(np.int64)
        digest = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
        return x, y, {"dataset": pair_dataset(batch_size), "dataset_sha256": digest, "synthetic": True}

    x, y, meta = cached(cache, ("pair", tuple(pair["input"]), int(pair["classes"]), batch_size, seed), make)
    return task, lambda: factory(), x, y, meta


def workload(cell, backend, cache):
    """(task, build_model, x, y, data meta) of a cell: a built-in task with its data, or a model pair."""
    if cell.get("pair"):
        return pair_workload(cell, backend.NAME, cache)
    task = get_task(cell["task"])
    x, y, meta = bench_data(task, cell, cache)
    return task, lambda: backend.models.build_model(task.model), x, y, meta


def setup_state(backend, speed, task, cell, dev, build_model=None):
    """Seeded model + optimizer, compiled and/or with the AMP step as the cell asks."""
    backend.device.seed(int(cell["seed"]))
    model = build_model() if build_model else backend.models.build_model(task.model)
    state = backend.train.make_state(task, model, dev)
    if cell["mode"] == "compiled":
        speed.compile_model(state)
    step = speed.make_step(state, amp=cell["precision"] == "amp")
    state.model.train()
    return state, step


def engine_window(backend, state, step, it, steps, dev):
    """`steps` steps through the native DataLoader; returns (seconds, seconds in the reader, last loss)."""
    to_device, sync, clock = backend.data.to_device, backend.device.synchronize, time.perf_counter
    reader, loss = 0.0, None
    sync(dev)
    start = clock()
    for _ in range(steps):
        r0 = clock()
        xb, yb = to_device(next(it), dev)
        reader += clock() - r0
        loss, _ = step(state, xb, yb)
    sync(dev)
    return clock() - start, reader, loss


def bare_window(backend, state, step, preloaded, offset, steps, dev):
    """`steps` steps over tensors already on the device (no reader); returns (seconds, last loss)."""
    sync, clock = backend.device.synchronize, time.perf_counter
    n, loss = len(preloaded), None
    sync(dev)
    start = clock()
    for i in range(offset, offset + steps):
        xb, yb = preloaded[i % n]
        loss, _ = step(state, xb, yb)
    sync(dev)
    return clock() - start, loss


def summarise_windows(seconds, steps, batch_size):
    """Per-window ms/step and samples/s -> medians with order-statistic CIs."""
    ms = [1000.0 * s / steps for s in seconds]
    sps = [steps * batch_size / s for s in seconds]
    ms_med, ms_lo, ms_hi = median_ci(ms)
    sps_med, sps_lo, sps_hi = median_ci(sps)
    return {"samples_per_s": sps_med, "samples_per_s_lo": sps_lo, "samples_per_s_hi": sps_hi,
            "ms_per_step": ms_med, "ms_per_step_lo": ms_lo, "ms_per_step_hi": ms_hi,
            "window_ms_per_step": ";".join(f"{v:.4f}" for v in ms)}


def run_speed_cell(cell, backend, speed, dev, cache):
    """Warm-up, then timed windows (engine and/or bare, alternating); returns one row per loop."""
    task, build_model, x, y, data_meta = workload(cell, backend, cache)
    batch_size = int(cell["batch_size"])
    n = len(y)
    if n < batch_size:
        raise UserError(f"{task.name}: {n} samples cannot fill one batch of {batch_size}")
    loops = cell["loops"]
    windows, warmup = int(cell["windows"]), int(cell["warmup"])
    fixed_steps = None if cell["steps"] == "auto" else int(cell["steps"])
    length = warmup + 2 + windows * (fixed_steps or MAX_AUTO_STEPS) + 1000   # warm-up may run longer (time floor)
    order = BatchOrder(n, batch_size, int(cell["seed"]), length)

    speed.reset_peak_memory(dev)
    state, step = setup_state(backend, speed, task, cell, dev, build_model)
    if cell.get("pair"):
        return pair_speed_rows(cell, backend, speed, state, step, x, y, order, dev, data_meta)
    it = iter(backend.data.make_loader(x, y, order, dev))
    sync, clock = backend.device.synchronize, time.perf_counter

    watch = LossWatch()

    def one():
        watch.check(engine_window(backend, state, step, it, 1, dev)[2], 1)

    sync(dev)
    first_step, warmup_s, done, typical = warm_up(one, cell, clock,
                                                  max_steps=length - windows * (fixed_steps or MAX_AUTO_STEPS) - 2)
    steps = window_steps(cell, typical)

    preloaded = None
    if "bare" in loops:
        preloaded = speed.preload(x, y, [order[i] for i in range(min(BARE_DISTINCT_BATCHES, order.per_epoch))], dev)
        warm = max(2, warmup // 2)
        watch.check(bare_window(backend, state, step, preloaded, 0, warm, dev)[1], warm)   # warm the bare path too

    engine_s, reader_s, bare_s = [], [], []
    for w in range(windows):
        # engine and bare windows alternate, and which goes first alternates too (no order bias)
        for loop in (("engine", "bare") if w % 2 == 0 else ("bare", "engine")):
            if loop not in loops:
                continue
            if loop == "engine":
                seconds, reader, loss = engine_window(backend, state, step, it, steps, dev)
                engine_s.append(seconds)
                reader_s.append(reader)
            else:
                seconds, loss = bare_window(backend, state, step, preloaded, w * steps, steps, dev)
                bare_s.append(seconds)
            watch.check(loss, steps)    # after the clock read: not timed
    watch.check_weights(backend, state.model)
    peak_mb, peak_kind = speed.peak_memory(dev)

    common = {"warmup_steps": done, "warmup_s": warmup_s, "first_step_s": first_step,
              "steps_per_window": steps, "windows": windows, "n_samples": n,
              "peak_mem_mb": peak_mb, "peak_mem_kind": peak_kind,
              "batch_order_hash": order_hash([order[i] for i in range(min(len(order), order.per_epoch))]),
              **data_meta}
    rows = []
    epoch_samples = cell.get("epoch_samples")
    if engine_s:
        row = {**common, "loop": "engine", **summarise_windows(engine_s, steps, batch_size)}
        reader_ms = float(np.median([1000.0 * r / steps for r in reader_s]))
        row["reader_ms_per_step"] = reader_ms
        row["compute_ms_per_step"] = float(np.median([1000.0 * (s - r) / steps for s, r in zip(engine_s, reader_s)]))
        row["reader_share"] = float(np.median([r / s for s, r in zip(engine_s, reader_s)]))
        rows.append(row)
    if bare_s:
        row = {**common, "loop": "bare", **summarise_windows(bare_s, steps, batch_size)}
        row["compute_ms_per_step"] = row["ms_per_step"]
        row["reader_ms_per_step"], row["reader_share"] = 0.0, 0.0
        rows.append(row)
    for row in rows:
        row["epoch_samples"] = epoch_samples
        row["epoch_seconds"] = epoch_samples / row["samples_per_s"] if epoch_samples else math.nan
    return rows


def warm_up(run_one, cell, clock, max_steps=None):
    """Run steps (excluded from timing) until at least cell['warmup'] steps and cell['warmup_seconds'] have
    passed, which also lets the other worker's idle math threads stop spinning; at most max_steps.
    Returns (first step s, warm-up s, steps, median step s)."""
    t0 = clock()
    run_one()
    first = clock() - t0
    times, done = [], 1
    while done < int(cell["warmup"]) or clock() - t0 < float(cell["warmup_seconds"]):
        t1 = clock()
        run_one()
        times.append(clock() - t1)
        done += 1
        if max_steps is not None and done >= max_steps:
            break
    return first, clock() - t0, done, float(np.median(times)) if times else first


def window_steps(cell, typical):
    """Timed steps per window: the cell's fixed number, or (auto) enough for its window_seconds."""
    if cell["steps"] != "auto":
        return int(cell["steps"])
    return int(min(MAX_AUTO_STEPS, max(1, math.ceil(float(cell["window_seconds"]) / max(typical, 1e-6)))))


def pair_speed_rows(cell, backend, speed, state, step, x, y, order, dev, data_meta):
    """A model pair's training speed: warm-up, then timed windows over pre-loaded batches (loop "bare")."""
    batch_size, windows = int(cell["batch_size"]), int(cell["windows"])
    preloaded = speed.preload(x, y, [order[i] for i in range(order.per_epoch)], dev)
    watch, sync, clock, box = LossWatch(), backend.device.synchronize, time.perf_counter, {"i": 0}

    def one():
        box["i"] += 1
        loss = bare_window(backend, state, step, preloaded, box["i"], 1, dev)[1]
        watch.check(loss, 1)

    sync(dev)
    first, warmup_s, done, typical = warm_up(one, cell, clock)
    steps = window_steps(cell, typical)
    seconds = []
    for w in range(windows):
        s, loss = bare_window(backend, state, step, preloaded, box["i"] + w * steps, steps, dev)
        seconds.append(s)
        watch.check(loss, steps)
    watch.check_weights(backend, state.model)
    peak_mb, peak_kind = speed.peak_memory(dev)
    row = {"loop": "bare", "warmup_steps": done, "warmup_s": warmup_s, "first_step_s": first,
           "steps_per_window": steps, "windows": windows, "n_samples": len(y), "peak_mem_mb": peak_mb,
           "peak_mem_kind": peak_kind, "reader_ms_per_step": 0.0, "reader_share": 0.0,
           "batch_order_hash": order_hash([order[i] for i in range(order.per_epoch)]), "epoch_samples": None,
           "epoch_seconds": math.nan, **summarise_windows(seconds, steps, batch_size), **data_meta}
    row["compute_ms_per_step"] = row["ms_per_step"]
    return [row]


def run_infer_cell(cell, backend, speed, dev, cache):
    """Inference latency per batch: eval mode, no autograd, pre-loaded batches, one clock read per call."""
    task, build_model, x, y, data_meta = workload(cell, backend, cache)
    batch_size = int(cell["batch_size"])
    if len(y) < batch_size:
        raise UserError(f"{cell['task']}: {len(y)} samples cannot fill one batch of {batch_size}")
    speed.reset_peak_memory(dev)
    state, _ = setup_state(backend, speed, task, {**cell, "precision": "fp32"}, dev, build_model)
    infer = speed.make_infer_step(state.model)
    order = BatchOrder(len(y), batch_size, int(cell["seed"]), BARE_DISTINCT_BATCHES)
    preloaded = [xb for xb, _ in speed.preload(x, y, [order[i] for i in range(min(len(order), order.per_epoch))], dev)]
    sync, clock, box = backend.device.synchronize, time.perf_counter, {"i": 0}

    def one():
        box["i"] += 1
        sync(dev)
        infer(preloaded[box["i"] % len(preloaded)])
        sync(dev)

    first, warmup_s, done, _ = warm_up(one, cell, clock)
    budget = float(cell["windows"]) * float(cell["window_seconds"])
    latencies, started = [], clock()
    while len(latencies) < INFER_MIN_CALLS or (clock() - started < budget and len(latencies) < INFER_MAX_CALLS):
        t0 = clock()
        one()
        latencies.append(1000.0 * (clock() - t0))
    peak_mb, peak_kind = speed.peak_memory(dev)
    med, lo, hi = median_ci(latencies)
    p95, p95_lo, p95_hi = quantile_ci(latencies, 0.95)
    return [{"loop": "infer", "latency_ms": med, "latency_ms_lo": lo, "latency_ms_hi": hi, "p95_ms": p95,
             "p95_ms_lo": p95_lo, "p95_ms_hi": p95_hi, "infer_calls": len(latencies),
             "ms_per_step": med, "ms_per_step_lo": lo, "ms_per_step_hi": hi, "compute_ms_per_step": med,
             "samples_per_s": 1000.0 * batch_size / med, "warmup_steps": done, "warmup_s": warmup_s,
             "first_step_s": first, "n_samples": len(y), "peak_mem_mb": peak_mb, "peak_mem_kind": peak_kind,
             **data_meta}]


def run_ttt_cell(cell, backend, speed, dev, cache):
    """Train whole epochs (engine path) until the evaluation accuracy reaches the task's target."""
    task = get_task(cell["task"])
    target = float(cell.get("target") or task.target_accuracy)
    splits, data_meta = dataset_splits(task, cell["dataset"], cache)
    speed.reset_peak_memory(dev)
    state, _ = setup_state(backend, speed, task, {**cell, "mode": "eager", "precision": "fp32"}, dev)
    use_val = splits.val_x is not None and len(splits.val_y) > 0
    eval_x, eval_y = (splits.val_x, splits.val_y) if use_val else (splits.test_x, splits.test_y)
    n, batch_size, seed = len(splits.train_y), int(cell["batch_size"]), int(cell["seed"])
    sync, clock = backend.device.synchronize, time.perf_counter
    train_s, epoch_s, acc, reached, epoch, first_order = 0.0, [], math.nan, False, 0, None
    steps_done, last_finite = 0, None
    for epoch in range(1, int(cell["max_epochs"]) + 1):
        batches = epoch_batches(n, batch_size, seed, epoch, task.protocol.drop_last)
        first_order = first_order or order_hash(batches)
        sync(dev)
        start = clock()
        train = backend.train.train_epoch(state, backend.data.make_loader(splits.train_x, splits.train_y, batches, dev))
        sync(dev)
        epoch_s.append(clock() - start)
        if train["n"]:
            last_finite = train["loss"]      # the epoch's mean loss up to the divergence, as `run` records
        if train["diverged_step"] is not None:
            raise Diverged(steps_done + train["diverged_step"], train.get("bad_loss", math.nan), last_finite)
        steps_done += len(batches)
        if not backend.train.parameters_finite(state.model):
            raise Diverged(steps_done, "finite, weights not", last_finite)
        train_s += epoch_s[-1]
        acc = backend.train.evaluate(state, backend.data.make_loader(
            eval_x, eval_y, eval_batches(len(eval_y), 1000), dev))["acc"]   # not timed
        if acc >= target:
            reached = True
            break
    peak_mb, peak_kind = speed.peak_memory(dev)
    return [{"loop": "ttt", "target_accuracy": target, "ttt_seconds": train_s if reached else math.nan,
             "ttt_epochs": epoch, "ttt_acc": acc, "ttt_reached": reached, "ttt_eval_split": "val" if use_val else "test",
             "epoch_seconds": float(np.median(epoch_s)), "samples_per_s": n / float(np.median(epoch_s)),
             "epoch_samples": n, "n_samples": n, "peak_mem_mb": peak_mb, "peak_mem_kind": peak_kind,
             "batch_order_hash": first_order, **data_meta}]


def run_bench_cell(cell, backend, speed, cache):
    """One cell -> its rows, each carrying the cell's identity and the machine/framework metadata."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan   # before this cell adds its own
    dev, dev_info = backend.device.configure(int(cell["threads"]), cell.get("device", "cpu"))
    knobs = speed.apply_settings(parse_knobs(cell.get("knobs")), dev)
    runners = {"ttt": run_ttt_cell, "infer": run_infer_cell, "speed": run_speed_cell}
    rows = runners[cell["kind"]](cell, backend, speed, dev, cache)
    identity = {k: cell[k] for k in ("suite", "task", "backend", "mode", "precision", "batch_size", "repeat",
                                     "seed", "run_id", "stage") if k in cell}
    meta = {**dev_info, **host_metadata(), "timestamp": now(), "load_avg": load, "cpu_count": os.cpu_count(),
            "status": "ok", "knobs": cell.get("knobs") or "", "knobs_in_effect": knobs_text(knobs),
            "model_spec": pair_label(cell.get("pair"))}
    out = []
    for row in rows:
        row = {**identity, **row, **meta}
        row["cell_key"] = cell["keys"][row["loop"]]
        out.append(row)
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    backend_name, result_fd = argv[0], int(argv[1])
    die_with_parent()
    results = os.fdopen(result_fd, "w", buffering=1)
    load_error = None
    try:
        backend = backends.load(backend_name)
        speed = importlib.import_module(f"dualbench.backends.{backend_name}.speed")
    except UserError as e:
        load_error = {"error": str(e), "user": True}
    except Exception as e:   # noqa: BLE001 - a broken install: every cell of this backend fails with it
        traceback.print_exc()
        load_error = {"error": error_line(e, {}, OOM_ADVICE), "user": False}
    results.write(json.dumps({"ready": True}) + "\n")   # imported: the parent may start timing cells
    cache = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        cell = json.loads(line)
        if load_error is not None:
            results.write(json.dumps(load_error) + "\n")
            continue
        try:
            reply = {"rows": run_bench_cell(cell, backend, speed, cache)}
        except UserError as e:
            reply = {"error": str(e), "user": True}
        except Diverged as e:
            reply = {"error": str(e), "diverged": True}
        except Exception as e:   # noqa: BLE001 - reported to the parent, which goes on with the next cell
            traceback.print_exc()
            reply = {"error": error_line(e, cell, OOM_ADVICE), "user": False,
                     "traceback": traceback.format_exc(limit=6)}
        results.write(json.dumps(reply, default=float) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (KeyboardInterrupt, BrokenPipeError):
        sys.exit(130)
