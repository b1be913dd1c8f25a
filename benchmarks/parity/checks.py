"""The parity engine: every check of one pair of models, as rows (dualbench.parity.rows).

With the same canonical start weights and the same numpy batches in both frameworks (one process,
nothing timed):

1. weights    round trips through the mapping, bit-exact (dualbench.parity.transfer).
2. forward    every matched module call's output, eval and train mode (hooks on both sides).
3. loss/grad  data loss, objective (with L1/L2 terms) and every parameter's gradient.
4. train      K optimizer steps, each from the same parameters on both sides: per step the loss,
              every parameter's update and every BatchNorm statistic at steps 1 and K; then an
              eval-mode forward with torch's
              running statistics copied into paddle (torch's running variance is unbiased,
              paddle's biased, so they drift apart by design). 3 and 4 run in lockstep on both
              sides (dualbench.parity.training). The same steps again in float64 (always for the
              tasks; for model pairs when a float32 row fails): formula differences that float32
              rounding hides show there, and float32 rounding shows as a difference that shrinks.
5. schedule   the per-epoch learning rates of the task's schedule, stepped far enough to change.

Dropout: identical 0/1 masks, drawn once in numpy per (step, module) and injected into both
frameworks through forward hooks (their own random streams differ even with the same seed); each
framework keeps its own scaling rule, so a difference in the dropout mode still shows.
"""
import time

import numpy as np

from dualbench.parity.kinds import DROPOUT_KINDS
from dualbench.parity.diagnose import diagnose_forward, diagnose_training, mark_float_noise, vacuous_reason
from dualbench.parity.inputs import take_rows
from dualbench.parity.pair import DROPOUT_POLICY, bind_mapping, mask_maker
from dualbench.parity.rows import (FAILED, TOLERANCES, describe, error_row, error_text, finish, first_failure,
                                   make_row, stack, tolerance)
from dualbench.parity.forward import compare_calls, compared_values, output_rows, record
from dualbench.parity.training import run_training
from dualbench.parity.transfer import (IMPORT_ERRORS, backend_weight_rows, import_start, orientation_from_error,
                                       start_rows, weight_rows)

def dropout_keys(side, pair):
    return {side.module_names[m.torch]: m.torch for m in pair.mapping.modules if m.kind in DROPOUT_KINDS}


# ---------------------------------------------------------------------------------------------
# 2. Forward


def forward_rows(pair, sides, models, ctx, config, x, mode):
    """Rows per matched call in one mode, the CallPairs they compare, and the records."""
    return compare_calls(pair.mapping, sides, models, ctx, x, mode, tolerance("forward", config))


def attribute_forward(pair, sides, config, x, forward):
    """Forward rows out of tolerance, against a float64 forward of both models (same start
    weights, same masks): float32 rounding (BatchNorm in train mode over a few values per channel
    amplifies it) becomes "noise", with each side's distance from its own float64 output.
    forward: [(mode, rows, compared, records)] of the float32 forward checks, in order."""
    from dualbench.parity.inputs import cast_inputs
    from dualbench.parity.training import attribute
    if not any(r["status"] == "FAIL" and np.isfinite(r["max_abs"]) for _, rows, _, _ in forward for r in rows):
        return
    models = {name: pair.fresh(sides, name) for name in sides}
    for name, side in sides.items():
        side.inspect.cast_model(models[name], "float64")
        side.import_weights(models[name], pair.start_in("float64"))
    holder = {"step": 0}
    removers = [side.inspect.inject_dropout_masks(models[name], mask_maker(config.seed, holder),
                                                  dropout_keys(side, pair)) for name, side in sides.items()]
    try:
        for mode, rows, compared, records in forward:
            records64 = {name: record(pair.mapping, side, models[name], cast_inputs(x, "float64"), mode != "eval")
                         for name, side in sides.items()}
            for row, cp in zip(rows, compared):
                calls = [r[0].get(key) for r in (records, records64)
                         for r, key in ((r["torch"], cp.torch_output), (r["paddle"], (cp.paddle, cp.paddle_call)))]
                if row["status"] == "FAIL" and row["name"] == cp.name and all(c is not None for c in calls):
                    attribute(row, None, (*compared_values(cp, calls[0], calls[1]),
                                          *compared_values(cp, calls[2], calls[3])))
    finally:
        for remove in removers:
            remove()


def vacuous_rows(ctx, records):
    """A row when the torch model's eval output is near zero or constant (agreement proves nothing)."""
    outputs = records["torch"][1]
    reason = vacuous_reason(stack([value for _, value in outputs])) if outputs else None
    if not reason:
        return []
    row = error_row(ctx, "forward", "eval", "(output)", "")
    row.update(status="vacuous", within=True, cause=(
        f"vacuous comparison: {reason} (the model's initial weights do that), so agreement proves nothing "
        "about the port; rerun with --weights random (compare_models(..., weights='random')) to start both "
        "sides from the same random canonical weights, or load trained weights in your model builder"))
    return [row]


# ---------------------------------------------------------------------------------------------
# 5. Schedule


def schedule_rows(pair, lock, ctx):
    """The per-epoch learning rates of both float32 replicas' schedulers, stepped far enough to change."""
    sched = pair.task.protocol.schedule
    replicas = {name: lock.reps[(name, "float32")] for name in ("torch", "paddle")}
    if sched.name == "none" or any(r.error for r in replicas.values()):
        return []
    if sched.name == "step":
        metrics = [1.0] * (3 * sched.step_size + 1)
    else:   # falls, then stalls long enough for two reductions
        metrics = [1.0 / (e + 1) for e in range(3)] + [0.25] * (3 * (sched.patience + 2))
    lrs = {}
    try:
        for name, rep in replicas.items():
            lrs[name] = []
            for metric in metrics:
                rep.side.scheduler_step(rep.state, metric)
                lrs[name].append(rep.side.current_lr(rep.state))
    except (RuntimeError, ValueError, TypeError) as e:
        return [error_row(ctx, "schedule", "per-epoch", "lr", error_text(e))]
    row = make_row(ctx, "schedule", "per-epoch", "lr", np.array(lrs["torch"]), np.array(lrs["paddle"]),
                   TOLERANCES["schedule"])
    row["step"] = len(metrics)
    if row["status"] != "ok":
        t, p = np.array(lrs["torch"]), np.array(lrs["paddle"])
        first = int(np.argmax(np.abs(t - p) > 0)) + 1
        row["cause"] = (f"the learning rates part at epoch {first}: torch {t[first - 1]:g}, paddle {p[first - 1]:g}"
                        + schedule_shift(t, p))
    return [row]


def schedule_shift(torch_lrs, paddle_lrs):
    """Replay: one side's per-epoch rates are the other's stepped once more (or once less)."""
    def same(a, b):
        return len(a) > 0 and np.allclose(a, b, rtol=1e-12, atol=0)
    for odd, a, b in (("paddle", paddle_lrs, torch_lrs), ("torch", torch_lrs, paddle_lrs)):
        if same(a[:-1], b[1:]):
            return (f". learning-rate schedule off by one: {odd}'s rates are the other's one epoch ahead (its "
                    f"scheduler was stepped once before the first epoch, or before the epoch's training). Fix: "
                    "step the scheduler once per epoch, after the epoch")
        if same(a[1:], b[:-1]):
            return (f". learning-rate schedule off by one: {odd}'s rates are the other's one epoch behind (its "
                    "scheduler is stepped one epoch late). Fix: step the scheduler once per epoch, after the epoch")
    return ""


# ---------------------------------------------------------------------------------------------
# One pair


def pair_context(pair, sides):
    dropout = DROPOUT_POLICY + (f"; set to 0 inside {', '.join(pair.functional_dropout)} (functional, cannot share "
                                "a mask)" if pair.functional_dropout else "")
    return {"task": pair.name, "dropout": dropout, "batch_size": len(pair.batches[0][1]),
            "steps": len(pair.batches), "torch_version": sides["torch"].version,
            "paddle_version": sides["paddle"].version}


class Stopwatch:
    """Seconds per stage into a dict (the pair's timings, reported beside the results)."""

    def __init__(self, into):
        self.into, self.clock, self.stage = into, time.perf_counter(), None

    def __call__(self, stage):
        now = time.perf_counter()
        if self.stage:
            self.into[self.stage] = self.into.get(self.stage, 0.0) + now - self.clock
        self.clock, self.stage = now, stage


# float32 and float64 replicas of both sides hold parameters and gradients: 2 x (4 + 4 + 8 + 8)
# bytes per parameter, and about as much again for activations and the frameworks' allocators
# (measured: vgg11, 133M parameters, 17 GB peak at 2x3x224x224)
FLOAT64_BYTES_PER_PARAMETER = 2 * 48


def available_memory():
    """Bytes the system can give without swapping (MemAvailable), or None where unknown."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def float64_fits(pair):
    """Whether the float64 reference fits in memory now; if not, a note says so and why."""
    parameters = sum(int(np.prod(t.shape)) for t in pair.mapping.tensors)
    need, free = parameters * FLOAT64_BYTES_PER_PARAMETER, available_memory()
    if free is None or need <= free:
        return True
    pair.notes = (pair.notes or []) + [
        f"float64 reference skipped: {parameters / 1e6:.0f}M parameters need about {need / 2**30:.0f} GiB for it, "
        f"{free / 2**30:.0f} GiB are available; the float32 rows out of tolerance stay FAIL, since rounding "
        "cannot be told from a formula difference without it (free memory, or check a smaller variant)"]
    return False


def check_pair(pair, sides, config):
    """All checks of one pair of models; returns its rows (dicts with rows.COLUMNS)."""
    if pair.timings is None:
        pair.timings = {}
    lap = Stopwatch(pair.timings)
    lap("weights")
    sides = bind_mapping(sides, pair.mapping)
    ctx = pair_context(pair, sides)
    rows = weight_rows(pair, sides, ctx)
    if pair.origin == "task":
        rows += backend_weight_rows(pair, sides, ctx)
    models = {name: pair.fresh(sides, name) for name in sides}
    try:
        exported = import_start(sides, models, pair.start)
    except IMPORT_ERRORS as e:
        message = error_text(e)
        rows.append(error_row(ctx, "weights", "start", "(import)",
                              orientation_from_error(pair, pair.start, message) or message))
        return finish(rows)
    start_weight_rows = start_rows(pair, ctx, exported)
    rows += start_weight_rows
    del exported
    forward, forward_failure = forward_checks(pair, sides, models, ctx, config, start_weight_rows, lap)
    rows += forward
    rows += training_checks(pair, sides, config, ctx, models, rows, forward_failure, lap)
    lap(None)
    return finish(rows)


def forward_checks(pair, sides, models, ctx, config, start_weight_rows, lap):
    """Check 2 in eval and train mode (the same dropout masks on both sides), the float64 attribution and
    the diagnosis of the first difference; returns (rows, the train-mode failure in words or None)."""
    x = pair.batches[0][0]
    lap("forward")
    holder = {"step": 0}
    removers = [side.inspect.inject_dropout_masks(models[name], mask_maker(config.seed, holder),
                                                  dropout_keys(side, pair)) for name, side in sides.items()]
    forward = []
    for mode in ("eval", "train"):    # eval first: a train-mode forward moves the BN statistics
        forward.append((mode, *forward_rows(pair, sides, models, ctx, config, x, mode)))
    for remove in removers:
        remove()
    if pair.float64 is not False:
        lap("float64 reference")
        attribute_forward(pair, sides, config, x, forward)
    lap("diagnosis")
    rows = []
    for mode, f_rows, compared, records in forward:
        diagnose_forward(pair, f_rows, compared, records, mode, start_weight_rows, seed=config.seed, earlier=rows)
        rows += f_rows + (model_output_rows(ctx, mode, records, f_rows, tolerance("forward", config))
                          if pair.origin == "models" else [])
        rows += vacuous_rows(ctx, records) if mode == "eval" else []
    bad = first_failure(forward[-1][1])
    return rows, describe(bad) if bad else None


def model_output_rows(ctx, mode, records, module_rows, tol):
    """A model pair's own outputs, leaf by leaf (a task's output is its last layer's, compared already); a
    failing one follows from the first failing module, or, when every module agrees, arises after the
    last one (code in forward() that is not a module)."""
    rows = output_rows(ctx, mode, records, tol)
    first = first_failure(module_rows)
    for row in rows:
        if row["status"] in FAILED and not row["cause"]:
            row["cause"] = (f"follows from {describe(first)}" if first else
                            "every module agrees, the model's output does not: the difference arises after the "
                            "last module, in code that is not a module (a functional call in forward())")
    return rows


def training_checks(pair, sides, config, ctx, models, rows_before, forward_failure, lap):
    """Checks 3-5 on the models (taken out of the dict, so that a big model's float32 replicas are freed
    before its float64 ones are built): gradients, steps, the eval forward after training and the
    schedule; then the float64 repeat where it is wanted and fits, which says which float32 differences
    are rounding; then the diagnosis. Returns the rows."""
    lap("training")
    lock = run_training(pair, sides, config, ctx, pair.batches, ("float32",),
                        {(name, "float32"): models.pop(name) for name in sides}, forward_failure, rows_before)
    part32, kept32 = lock.rows["float32"], lock.kept["float32"]
    before_training = first_failure(rows_before + part32["grad"])
    schedule = schedule_rows(pair, lock, ctx)
    float32_rows = part32["grad"] + part32["train"] + part32["after"]
    rows64, trusted64 = [], False   # trusted64: a float64 replay whose diagnosis the float32 rows can point to
    wanted = pair.float64 is True or (pair.float64 == "auto" and first_failure(float32_rows))
    if wanted and float64_fits(pair):
        del lock
        lock, batches, same = float64_training(pair, sides, config, ctx, forward_failure, lap, rows_before)
        part64 = lock.rows["float64"]
        rows64 = part64["grad"] + part64["train"] + part64["after"]
        broken64 = [f"{name}: {rep.error}" for (name, d), rep in lock.reps.items() if d == "float64" and rep.error]
        if broken64 and not any(r["status"] == "error" for r in float32_rows):
            # the reference itself cannot run (paddle has no float64 kernel for ClipGradByNorm, say):
            # the float32 rows are judged without it
            for row in rows64:
                if row["status"] in FAILED:
                    row.update(status="skipped", within=True, cause=(
                        f"the float64 reference could not run ({'; '.join(broken64)}); the float32 rows are "
                        "judged without it"))
        else:
            if same:
                part32, kept32 = lock.rows["float32"], lock.kept["float32"]
                float32_rows = part32["grad"] + part32["train"] + part32["after"]
            else:
                mark_float_noise(pair, float32_rows, part64["grad"] + part64["train"])
            # diagnose after the noise verdict: a float32 gap that float64 explains needs no cause
            lap("diagnosis")
            before64 = first_failure(rows_before + part64["grad"])
            diagnose_training(pair, part64["train"], lock.kept["float64"], describe(before64) if before64 else None,
                              history_maker(pair, sides, config, batches, "float64"), TOLERANCES["float64-train"][1])
            first64 = first_failure(part64["train"])
            if first64 is not None and not before_training:
                trusted64 = True   # the float64 replay is the one to trust; float32 rows say where to look
                for row in part32["train"]:
                    if row["status"] in FAILED and not row["cause"]:
                        row["cause"] = f"see {describe(first64)}: {first64['cause']}"
                        break
    lap("diagnosis")
    diagnose_training(pair, part32["train"], kept32, describe(before_training) if before_training else None,
                      None if trusted64 else history_maker(pair, sides, config, pair.batches, "float32"))
    return float32_rows + schedule + rows64


def float64_training(pair, sides, config, ctx, forward_failure, lap, earlier=()):
    """The training replicas again in float64: on the same batches and steps where the pair allows it,
    float32 and float64 replicas side by side, so that every float32 row has its own float64 reference
    (training.attribute); otherwise float64 alone on the smaller float64 budget. Returns (lock, batches,
    same)."""
    same = pair.batch64 >= len(pair.batches[0][1]) and pair.steps64 >= len(pair.batches)
    batches = pair.batches if same else [(take_rows(bx, pair.batch64), by[:pair.batch64])
                                         for bx, by in pair.batches[:pair.steps64]]
    dtypes = ("float32", "float64") if same else ("float64",)
    ctx = ctx if same else {**ctx, "batch_size": len(batches[0][1]), "steps": len(batches)}   # what the rows ran
    lap("float64 reference")
    lock = run_training(pair, sides, config, ctx, batches, dtypes,
                        {(name, d): pair.fresh(sides, name) for name in sides for d in dtypes}, forward_failure,
                        earlier)
    return lock, batches, same


def history_maker(pair, sides, config, batches, dtype):
    """history(names, steps) for diagnose_training: the torch side replayed alone."""
    from dualbench.parity.training import update_history
    return lambda names, steps: update_history(pair, sides["torch"], dtype, batches, config.seed, names, steps)


def check_task(task, sides, config):
    """All checks of one built-in task (its two models built from the task's spec)."""
    from dualbench.parity.pair import task_pair
    return check_pair(task_pair(task, sides, config), sides, config)

