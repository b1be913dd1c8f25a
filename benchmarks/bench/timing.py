"""The timed loops of a bench cell, inside the worker: training speed (engine and bare windows), inference
latency and time to target accuracy. Framework-blind: they call backends.<name>.{device, models, train,
data} and the backend's speed part. Divergence: the loss is read (outside the timed region) after every
warm-up step and at the end of every window, the weights at the end of the cell; a NaN/Inf stops the cell,
which then measured nothing."""
import math
import time

import numpy as np

from dualbench.bench.workload import BatchOrder, dataset_splits, workload
from dualbench.common.data.split import epoch_batches, eval_batches, order_hash
from dualbench.common.errors import UserError
from dualbench.common.stats import median_ci, quantile_ci
from dualbench.common.tasks import get_task

MAX_AUTO_STEPS = 2000     # cap on auto-sized windows (a window of a tiny model at ~0.3 ms/step)


BARE_DISTINCT_BATCHES = 16


INFER_MIN_CALLS, INFER_MAX_CALLS = 20, 5000


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
