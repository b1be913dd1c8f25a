"""`dualbench parity`: prove torch and paddle compute the same thing, or say where and why not.

For each task, with the same canonical weights and the same seeded numpy batches in both frameworks
(one process, nothing timed):

1. weights    canonical export -> import into the other framework -> export, both directions, and
              back again (torch -> canonical -> paddle -> canonical -> torch): must be bit-exact;
              then the start weights of every later check, compared after import into both.
2. forward    every layer's output (hooks matched by the spec's layer names), eval and train mode.
3. loss/grad  data loss, objective (with L1/L2 terms) and every parameter's gradient.
4. train      K optimizer steps (task optimizer, weight decay, regularisers, clipping): per step the
              loss, every parameter's change since the start and every BatchNorm statistic; then an
              eval-mode forward with torch's running statistics copied into paddle (notes/).
              The same K steps again in float64 ("float64" mode): formula differences that float32
              rounding hides (clipping epsilon at ordinary norms, a default AdamW decay under Adam's
              loose float32 tolerance) show there, while rounding noise vanishes (float64 agrees to
              1e-15 in notes/).
5. schedule   the per-epoch learning rates of the task's schedule, stepped far enough to change.

Dropout: identical masks, drawn once in numpy per (step, layer) and injected into both frameworks
through forward hooks (the frameworks' own RNGs differ, see notes/); nothing is disabled.
BatchNorm starts from random gamma/beta/running statistics so that the stat mapping is exercised.

Comparison of two tensors: max_abs = max|a - b|, max_rel = max_abs / max|reference| (the torch
value; relative to the tensor's largest magnitude, since elementwise relative error is meaningless
on near-zero entries); within tolerance when max_abs <= atol + rtol * max|reference|. For parameters
after training the reference is the change since the start (p_k - p_0), so the tolerance scales
with how far the optimizer moved them.

Default tolerances. Measured with `dualbench parity --all` (22 tasks, seeds 0 and 1; torch 2.14.1,
paddle 3.3.1, float32 CPU, 2 cores): the largest error of any row that is not an expected convention
difference, and the tolerance chosen about 10-50x above it (atol covers tensors whose own scale is
at rounding level, e.g. SGD updates of 1e-8 on weights of 1e-1):

  check (mode)           measured max_abs / max_rel          atol    rtol
  weights (all legs)     0 / 0                               0       0      bit-exact
  forward eval           3.3e-6 / 1.1e-6                     1e-5    1e-4
  forward train          1.7e-5 / 5.0e-6 (BN, batch stats)   1e-5    1e-4
  loss                   1.5e-5 / 2.2e-7 (MSE, loss ~70)     1e-5    1e-5
  grad                   3.9e-7 / 9e-6                       1e-7    1e-4
  train loss per step    1.0e-4 / 8e-6 (SGD), 1.4e-5 (Adam)  1e-5    1e-4
  train params SGD/mom.  7e-6 / 4.7e-4 (updates of 1e-5)     1e-7    1e-3   of the change p_k - p_0
  train params Adam      5.4e-6 / 2.4e-3 (MNIST), 1.8e-2 (food11-cnn step 1)
                                                             1e-7    5e-2   (notes: ~0.05 lr steps)
  train BN statistics    4.9e-6 / 9e-6 (SGD)                 1e-6    1e-4
  float64 loss, grads    5e-13 / 6e-12                       1e-12   1e-9
  float64 train          1e-10 / 4e-7 (Adam, food11-cnn); Momentum 9e-8 because paddle keeps mu
                         in float32 (0.8999999762) even for float64 parameters
                                                             1e-12   1e-5
  schedule (lr/epoch)    1.4e-20 / 1.4e-18                   0       1e-12

Verdicts beyond the tolerances, all derived from observed numbers:
- "expected": a BatchNorm running_var that differs exactly as torch's unbiased and paddle's biased
  batch variance predict (fitted against every momentum/variance convention; rules.bn_convention).
- "noise": a float32 gradient or training row out of tolerance while the float64 repeat of the same
  checks agrees (rounding amplified: Adam on near-zero gradients, long cancelling sums); and the
  bias of a layer directly before BatchNorm, whose true gradient is exactly zero.
- Sizes: the task's batch capped at 32 and at BATCH_FLOP_BUDGET; 10 steps, fewer only when they
  would exceed FLOAT32_STEP_BUDGET (food11-cnn: batch 2, 2 steps); the float64 repeat uses batch
  <= 8 and the same steps within the FLOAT64_* budgets (food11-cnn: batch 1, 1 step). An explicit
  --steps / --batch-size is honoured.

The BatchNorm running variance is expected to differ (torch: unbiased batch variance, paddle:
biased): those rows are fitted against the conventions and marked "expected" rather than failed.
"""
import importlib
import re
import sys
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import numpy as np

from dualbench.common import parity_rules as rules
from dualbench.common.errors import UserError
from dualbench.common.init import shared_weights
from dualbench.common.tasks import PARAM_KINDS, Optimizer, select_tasks

# (atol, rtol) per check; see the module docstring for the measurements behind them.
TOLERANCES = {
    "weights": (0.0, 0.0),
    "forward": (1e-5, 1e-4),
    "loss": (1e-5, 1e-5),
    "grad": (1e-7, 1e-4),
    "train-loss": (1e-5, 1e-4),
    "train-param": (1e-7, 1e-3),
    "train-param-adam": (1e-7, 5e-2),
    "train-stat": (1e-6, 1e-4),
    "float64": (1e-12, 1e-9),
    "float64-train": (1e-12, 1e-5),
    "schedule": (0.0, 1e-12),
}

CHECK_ORDER = ("weights", "forward", "loss", "grad", "train", "schedule")
FAILED = ("FAIL", "error")
COLUMNS = ["task", "check", "mode", "name", "step", "kind", "shape", "max_abs", "max_rel", "scale",
           "worst_index", "atol", "rtol", "within", "status", "cause", "dropout", "batch_size", "steps",
           "torch_version", "paddle_version"]
DROPOUT_POLICY = "identical numpy masks injected into both"
DEFAULT_STEPS = 10


@dataclass
class ParityConfig:
    steps: Optional[int] = None         # default: DEFAULT_STEPS, fewer above FLOAT32_STEP_BUDGET
    batch_size: Optional[int] = None     # default: the task's batch size, at most 32
    seed: int = 0
    optimizer: Optional[str] = None      # sgd | momentum | adam: override the task's optimizer
    atol: Optional[float] = None         # override every float32 tolerance (weights stay exact)
    rtol: Optional[float] = None
    float64: bool = True
    float64_batch: int = 8
    dataset: Optional[str] = None        # real batches instead of random ones
    data_path: Optional[Path] = None
    start_weights: Optional[dict] = None  # canonical start weights; default: common.init.shared_weights
    batches: Optional[list] = None        # [(x float32, y int64)] per step, instead of random ones


# ---------------------------------------------------------------------------------------------
# The two sides: each backend's public functions, overridable one by one (fault injection in tests)


def load_side(name, **overrides):
    """A backend as a namespace of the functions parity calls; keyword arguments replace any of them."""
    from dualbench import backends
    module = backends.load(name)
    inspect = importlib.import_module(f"dualbench.backends.{name}.inspect")
    dev = module.device.resolve_device("cpu")
    side = SimpleNamespace(
        name=name, inspect=inspect, version=inspect.framework_version(),
        build_model=module.models.build_model,
        export_weights=module.weights.export_weights,
        import_weights=module.weights.import_weights,
        make_state=lambda task, model: module.train.make_state(task, model, dev),
        train_step=module.train.train_step,
        scheduler_step=module.train.scheduler_step,
        current_lr=module.train.current_lr,
        to_inputs=inspect.to_tensor,
        to_labels=inspect.to_tensor)
    for key, value in overrides.items():
        if not hasattr(side, key):
            raise ValueError(f"unknown side function {key!r}")
        setattr(side, key, value)
    return side


def load_sides(torch_overrides=None, paddle_overrides=None):
    return {"torch": load_side("torch", **(torch_overrides or {})),
            "paddle": load_side("paddle", **(paddle_overrides or {}))}


# ---------------------------------------------------------------------------------------------
# Inputs: batches, dropout masks, start weights


def make_batches(task, config, batch_size, n):
    """n batches of (float32 inputs, int64 labels): seeded random, or real data."""
    if config.dataset:
        from dualbench.common.data.sources import load_dataset
        from dualbench.common.data.split import prepare_splits
        splits = prepare_splits(load_dataset(config.dataset, config.data_path, progress=False), task)
        need = n * batch_size
        if len(splits.train_y) < need:
            raise UserError(f"dataset '{config.dataset}' has {len(splits.train_y)} training samples; "
                            f"parity needs {need} (--steps x --batch-size)")
        order = np.random.default_rng([config.seed, 5]).permutation(len(splits.train_y))[:need]
        x, y = splits.train_x[order], splits.train_y[order].astype(np.int64)
        return [(x[i * batch_size:(i + 1) * batch_size], y[i * batch_size:(i + 1) * batch_size]) for i in range(n)]
    rng = np.random.default_rng([config.seed, 1234])
    mean, std = task.data.normalize
    batches = []
    for _ in range(n):
        pixels = rng.random((batch_size, *task.model.input_shape)) ** 3   # mostly dark, like images
        batches.append((((pixels - mean) / std).astype(np.float32),
                        rng.integers(0, task.num_classes, batch_size).astype(np.int64)))
    return batches


BATCH_FLOP_BUDGET = 2e8     # forward FLOPs of one float32 parity batch
FLOAT32_STEP_BUDGET = 1e10  # float32 forward FLOPs over the default steps (food11-cnn: 2 steps)
FLOAT64_FLOP_BUDGET = 2e7   # ... of one float64 batch (float64 convolutions are several times slower)
FLOAT64_STEP_BUDGET = 2e9   # float64 forward FLOPs over all repeated steps (food11: 1 step)


def forward_flops(spec):
    """Multiply-adds x 2 of one sample's forward pass (conv and linear layers)."""
    c, h, w = spec.input_shape
    flops = 0
    for layer in spec.layers:
        if layer.kind == "conv":
            k, pad = layer.arg("k"), layer.arg("pad")
            h, w, c_in, c = h + 2 * pad - k + 1, w + 2 * pad - k + 1, c, layer.arg("cout")
            flops += 2 * c_in * c * k * k * h * w
        elif layer.kind == "maxpool":
            h, w = h // layer.arg("k"), w // layer.arg("k")
        elif layer.kind == "linear":
            flops += 2 * layer.arg("fin") * layer.arg("fout")
    return flops


def parity_sizes(task, config):
    """(batch, steps, float64 batch, float64 steps): the task's batch, capped for a fast --all.

    An explicit config.steps / config.batch_size is always honoured for float32.
    """
    per_sample = max(forward_flops(task.model), 1)
    batch = config.batch_size or max(2, min(task.protocol.batch_size, 32, int(BATCH_FLOP_BUDGET // per_sample)))
    steps = config.steps or max(2, min(DEFAULT_STEPS, int(FLOAT32_STEP_BUDGET // (per_sample * batch))))
    batch64 = max(1, min(config.float64_batch, batch, int(FLOAT64_FLOP_BUDGET // per_sample)))
    steps64 = max(1, min(steps, int(FLOAT64_STEP_BUDGET // (per_sample * batch64))))
    return batch, steps, batch64, steps64


def mask_maker(seed, holder):
    """mask_for(name, shape, p, channelwise) for inject_dropout_masks: the same mask on both sides."""
    def mask_for(name, shape, p, channelwise):
        rng = np.random.default_rng([seed, holder["step"], zlib.crc32(name.encode())])
        mask_shape = tuple(shape[:2]) + (1,) * (len(shape) - 2) if channelwise else tuple(shape)
        return (rng.random(mask_shape) >= p) / (1.0 - p)
    return mask_for


def randomise_bn(task, weights, seed):
    """Give BatchNorm non-trivial gamma/beta/running stats so that their mapping is exercised."""
    rng = np.random.default_rng([seed, 99])
    out = {k: v.copy() for k, v in weights.items()}
    for layer in task.model.layers:
        if layer.kind == "bn2d":
            c = layer.arg("c")
            out[f"{layer.name}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
            out[f"{layer.name}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
            out[f"{layer.name}.running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
            out[f"{layer.name}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    return out


# ---------------------------------------------------------------------------------------------
# Rows


def layer_kinds(task):
    return {layer.name: layer.kind for layer in task.model.layers}


def tensor_kind(task, name):
    return layer_kinds(task).get(name.split(".")[0], "")


def tolerance(check, config):
    atol, rtol = TOLERANCES[check]
    if check in ("weights", "float64", "float64-train", "schedule"):
        return atol, rtol
    return (config.atol if config.atol is not None else atol, config.rtol if config.rtol is not None else rtol)


def make_row(ctx, check, mode, name, ref, other, tol, step=None, kind=""):
    c = rules.compare(ref, other, *tol)
    shape = "x".join(str(d) for d in np.shape(ref)) if c["shape_ok"] else \
        f"{list(np.shape(ref))} vs {list(np.shape(other))}"
    row = dict(ctx, check=check, mode=mode, name=name, step=step, kind=kind, shape=shape,
               max_abs=c["max_abs"], max_rel=c["max_rel"], scale=c["scale"], worst_index=c["worst_index"],
               atol=tol[0], rtol=tol[1], within=c["within"], status="ok" if c["within"] else "FAIL", cause="")
    if not c["shape_ok"]:
        row["cause"] = f"output shapes differ: torch {list(np.shape(ref))}, paddle {list(np.shape(other))}"
    return row


def error_row(ctx, check, mode, name, message, step=None, kind="", tol=(np.nan, np.nan)):
    return dict(ctx, check=check, mode=mode, name=name, step=step, kind=kind, shape="", max_abs=np.nan,
                max_rel=np.nan, scale=np.nan, worst_index="", atol=tol[0], rtol=tol[1], within=False,
                status="error", cause=message)


def _error_text(e):
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


# ---------------------------------------------------------------------------------------------
# 1. Weights


def _orientation_from_error(task, weights, message):
    """An import error whose message shows a Linear weight's transposed shape."""
    numbers = [tuple(int(v) for v in re.split(r"[,\s]+", m.strip()) if v)
               for m in re.findall(r"[\[(]\s*(\d+\s*,\s*\d+)\s*[\])]", message)]
    for name, w in weights.items():
        if tensor_kind(task, name) == "linear" and name.endswith(".weight") and w.shape[0] != w.shape[1]:
            if w.shape[::-1] in numbers:
                return rules.explain("linear_orientation", f"importing {name} {list(w.shape)} failed: {message}")
    return None


def weight_rows(task, sides, ctx, start):
    """Round trips from each framework's own initialisation, then the common start weights."""
    rows = []
    tol = TOLERANCES["weights"]
    for origin, other in (("torch", "paddle"), ("paddle", "torch")):
        a, b = sides[origin], sides[other]
        src = a.export_weights(a.build_model(task.model))
        legs = [(f"{origin}>{other}", b), (f"{origin}>{other}>{origin}", a)]
        current = src
        for mode, side in legs:
            try:
                model = side.build_model(task.model)
                side.import_weights(model, current)
                current = side.export_weights(model)
            except (ValueError, AssertionError, RuntimeError, KeyError) as e:
                message = _error_text(e)
                cause = _orientation_from_error(task, current, message) or f"import into {side.name} failed: {message}"
                rows.append(error_row(ctx, "weights", mode, "(import)", cause, tol=tol))
                break
            for name in src:
                got = current.get(name)
                if got is None:
                    rows.append(error_row(ctx, "weights", mode, name, f"{name} missing after {mode}", tol=tol))
                    continue
                row = make_row(ctx, "weights", mode, name, src[name], got, tol, kind=tensor_kind(task, name))
                if row["status"] != "ok":
                    row["cause"] = rules.weight_cause(name, row["kind"], src[name], got, src, current,
                                                      origin, side.name) or row["cause"]
                rows.append(row)
    return rows


def import_start(task, sides, models, start):
    """Import the start weights into both models; returns the paddle side's canonical view."""
    for name, side in sides.items():
        side.import_weights(models[name], {k: v.copy() for k, v in start.items()})
    return {name: sides[name].export_weights(models[name]) for name in sides}


def start_rows(task, ctx, exported):
    rows = []
    ref, other = exported["torch"], exported["paddle"]
    for name in ref:
        if name not in other:
            rows.append(error_row(ctx, "weights", "start", name, f"paddle has no {name}"))
            continue
        row = make_row(ctx, "weights", "start", name, ref[name], other[name], TOLERANCES["weights"],
                       kind=tensor_kind(task, name))
        if row["status"] != "ok":
            row["cause"] = rules.weight_cause(name, row["kind"], ref[name], other[name], ref, other) or row["cause"]
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# 2. Forward


def forward_rows(task, sides, models, ctx, config, x, mode, weight_rows_start):
    train = mode == "train"
    outs, errors = {}, {}
    for name, side in sides.items():
        outs[name], _, errors[name] = side.inspect.layer_outputs(models[name], side.to_inputs(x), train)
    tol = tolerance("forward", config)
    rows = []
    for layer in task.model.layers:
        t, p = outs["torch"].get(layer.name), outs["paddle"].get(layer.name)
        if t is None or p is None:
            message = "; ".join(f"{n}: {errors[n]}" for n in errors if errors[n]) or "layer did not run"
            rows.append(error_row(ctx, "forward", mode, layer.name, message, kind=layer.kind, tol=tol))
            break
        rows.append(make_row(ctx, "forward", mode, layer.name, t, p, tol, kind=layer.kind))
    diagnose_forward(task, rows, outs, x, mode, weight_rows_start)
    return rows, outs


def diagnose_forward(task, rows, outs, x, mode, weight_rows_start, after=None):
    """Put a cause on the first layer that leaves tolerance (its input still agreed)."""
    spec = {layer.name: layer for layer in task.model.layers}
    previous = None
    for row in rows:
        if row["status"] == "ok":
            previous = row["name"]
            continue
        layer = spec[row["name"]]
        in_t = outs["torch"].get(previous) if previous else x
        cause = None
        if after:
            cause = f"follows from {after}"
        elif layer.kind in PARAM_KINDS:
            bad = [r for r in weight_rows_start if r["name"].startswith(layer.name + ".") and r["status"] != "ok"]
            bn_stats = [r for r in bad if "running" in r["name"]]
            if bad:
                cause = next((r["cause"] for r in bad if r["cause"]), None) or \
                    f"the weights of {layer.name} differ after import ({', '.join(r['name'] for r in bad)})"
                if layer.kind == "bn2d" and mode == "eval" and bn_stats and len(bn_stats) == len(bad):
                    cause = rules.explain("bn_eval_stats", cause)
        elif layer.kind == "maxpool":
            cause = rules.pool_cause(np.shape(in_t), np.shape(outs["torch"].get(layer.name)),
                                     np.shape(outs["paddle"].get(layer.name)) if layer.name in outs["paddle"] else None,
                                     layer.arg("k"))
        elif layer.kind in ("dropout", "dropout2d") and mode == "train":
            cause = rules.explain("dropout_masks", f"{layer.name} differs with the same input")
        if cause is None and row["status"] == "error":
            cause = row["cause"]
        if cause is None:
            cause = (f"{layer.name} ({layer.kind}) receives the same input on both sides "
                     f"({'the batch' if previous is None else previous + ' agrees'}) but computes a different "
                     f"output: no known convention difference matches; compare the layer's construction")
        row["cause"] = cause
        return row
    return None


# ---------------------------------------------------------------------------------------------
# 3 + 4. Loss, gradients and training (float32 and float64)


def train_run(task, side, start, batches, seed, dtype, model=None):
    """Gradients at the start (first batch, first masks), then len(batches) train steps.

    model: an already built float32 model to reuse (its weights are replaced by `start`).
    """
    model = model if model is not None else side.build_model(task.model)
    if dtype != "float32":
        side.inspect.cast_model(model, dtype)
    cast = {k: v.astype(dtype) for k, v in start.items()}
    side.import_weights(model, cast)
    state = side.make_state(task, model)
    holder = {"step": 0}
    bn_names = [layer.name for layer in task.model.layers if layer.kind == "bn2d"]
    bn_batches = {name: [] for name in bn_names}

    def record_bn(name, inputs, _output):
        x = inputs.astype(np.float64)
        bn_batches[name].append((x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3)), x.size // x.shape[1]))

    remove_masks = side.inspect.inject_dropout_masks(model, mask_maker(seed, holder))
    remove_watch = side.inspect.watch_layers(model, record_bn, names=bn_names) if bn_names else (lambda: None)
    side.inspect.set_mode(model, True)
    labels = [side.to_labels(y) for _, y in batches]
    label_info = (tuple(side.inspect.to_numpy(labels[0]).shape), side.inspect.to_numpy(labels[0]).dtype.name)
    result = {"weights": {0: side.export_weights(model)}, "losses": [], "first": None, "error": None,
              "bn": bn_batches, "model": model, "state": state, "labels": label_info}
    try:
        x0 = side.to_inputs(batches[0][0].astype(dtype))
        result["first"] = side.inspect.loss_and_gradients(state, x0, labels[0])
        side.import_weights(model, cast)          # that forward moved the BN running statistics
        for name in bn_names:
            bn_batches[name].clear()
        for k, (x, _) in enumerate(batches):
            holder["step"] = k
            loss, _ = side.train_step(state, side.to_inputs(x.astype(dtype)), labels[k])
            result["losses"].append(float(loss))
            if k == 0 or k == len(batches) - 1:   # steps 1 and K (all steps would not fit in memory for big models)
                result["weights"][k + 1] = side.export_weights(model)
    except (RuntimeError, ValueError, TypeError, AssertionError, IndexError) as e:
        result["error"] = _error_text(e)
    finally:
        remove_masks()
        remove_watch()
    return result


def loss_grad_rows(task, ctx, runs, config, mode, forward_after=None):
    """Loss, objective and gradients from the start of the runs (same batch and masks as step 1)."""
    t, p = runs["torch"], runs["paddle"]
    f64 = mode == "float64"
    tol_loss = TOLERANCES["float64"] if f64 else tolerance("loss", config)
    tol_grad = TOLERANCES["float64"] if f64 else tolerance("grad", config)
    labels = {"torch": t["labels"], "paddle": p["labels"]}
    if t["first"] is None or p["first"] is None:
        message = "; ".join(f"{n}: {r['error']}" for n, r in runs.items() if r["first"] is None)
        cause = rules.label_cause(labels, message) or message
        return [error_row(ctx, "loss", mode, "loss", cause, tol=tol_loss)]
    rows = [make_row(ctx, "loss", mode, "loss", t["first"]["loss"], p["first"]["loss"], tol_loss)]
    if task.protocol.l1 or task.protocol.l2:
        rows.append(make_row(ctx, "loss", mode, "objective", t["first"]["objective"], p["first"]["objective"], tol_loss))
    output_ok = rules.compare(t["first"]["output"], p["first"]["output"], *tol_loss)["within"]
    for row in rows:
        if row["status"] != "ok":
            if forward_after:
                row["cause"] = f"follows from {forward_after}"
            elif output_ok:
                row["cause"] = rules.label_cause(labels) or (
                    "same model output, different loss: the loss function or its reduction differs")
            else:
                row["cause"] = "the model outputs already differ (see forward)"
    loss_ok = all(r["status"] == "ok" for r in rows)
    for name, g in t["first"]["grads"].items():
        other = p["first"]["grads"].get(name)
        if other is None:
            rows.append(error_row(ctx, "grad", mode, name, f"paddle has no gradient for {name}", tol=tol_grad))
            continue
        row = make_row(ctx, "grad", mode, name, g, other, tol_grad, kind=tensor_kind(task, name))
        if row["status"] != "ok":
            row["cause"] = (f"follows from {forward_after}" if forward_after else
                            "backward differs although forward and loss agree" if loss_ok else
                            "follows from the loss difference")
        rows.append(row)
    grad_scale = {n: float(np.abs(g).max()) for n, g in t["first"]["grads"].items()}
    mark_bn_bias_noise(task, rows, grad_scale)
    return rows


def _trainable(task, weights):
    return {k: v for k, v in weights.items() if "running_" not in k}


def biases_before_bn(task):
    """Bias names of conv/linear layers directly followed by BatchNorm: their true gradient is zero."""
    layers = task.model.layers
    return {f"{a.name}.bias": f"{a.name}.weight" for a, b in zip(layers, layers[1:])
            if a.kind in ("conv", "linear") and b.kind == "bn2d"}


def mark_bn_bias_noise(task, rows, reference):
    """Failed rows of a bias before BatchNorm: judge them against the layer's weight scale instead.

    reference: {weight name: its max |value|} (gradient, or parameter change) on the torch side.
    """
    pairs = biases_before_bn(task)
    for row in rows:
        weight = pairs.get(row["name"])
        if weight is None or row["status"] != "FAIL" or not np.isfinite(row["max_abs"]):
            continue
        adam_step = row["check"] == "train" and row["mode"] == "float32" and \
            task.protocol.optimizer.name == "adam"
        if adam_step or row["max_abs"] <= row["atol"] + row["rtol"] * reference.get(weight, 0.0):
            row["status"], row["within"], row["cause"] = "noise", True, rules.explain("bn_bias_noise")


def train_rows(task, ctx, runs, config, mode, start):
    """Per step the loss; at steps 1 and K every parameter's change since the start and every BN stat."""
    t, p = runs["torch"], runs["paddle"]
    f64 = mode == "float64"
    opt = task.protocol.optimizer
    tol_loss = TOLERANCES["float64-train"] if f64 else tolerance("train-loss", config)
    tol_param = TOLERANCES["float64-train"] if f64 else tolerance(
        "train-param-adam" if opt.name == "adam" else "train-param", config)
    tol_stat = TOLERANCES["float64-train"] if f64 else tolerance("train-stat", config)
    rows = []
    steps = min(len(t["losses"]), len(p["losses"]))
    bn_layers = [layer.name for layer in task.model.layers if layer.kind == "bn2d"]
    for k in range(1, steps + 1):   # in step order, so the first failing row is the first failing step
        rows.append(make_row(ctx, "train", mode, "loss", t["losses"][k - 1], p["losses"][k - 1], tol_loss, step=k))
        if k not in t["weights"] or k not in p["weights"]:
            continue
        wt, wp, w0t, w0p = t["weights"][k], p["weights"][k], t["weights"][0], p["weights"][0]
        param_rows = []
        for name in wt:
            kind = tensor_kind(task, name)
            if name not in wp:
                param_rows.append(error_row(ctx, "train", mode, name, f"paddle has no {name}", step=k, kind=kind))
            elif "running_" in name:
                param_rows.append(make_row(ctx, "train", mode, name, wt[name], wp[name], tol_stat, step=k, kind=kind))
            else:
                delta_t = wt[name].astype(np.float64) - w0t[name]
                delta_p = wp[name].astype(np.float64) - w0p[name]
                param_rows.append(make_row(ctx, "train", mode, name, delta_t, delta_p, tol_param, step=k, kind=kind))
        moved = {n: float(np.abs(wt[n].astype(np.float64) - w0t[n]).max()) for n in wt if "running_" not in n}
        mark_bn_bias_noise(task, param_rows, moved)
        for layer in bn_layers:
            explain_bn_rows(param_rows, layer, k, t, p, start)
        rows += param_rows
    for name, run in runs.items():
        if run["error"]:
            cause = rules.label_cause({n: r["labels"] for n, r in runs.items()}, run["error"]) or run["error"]
            rows.append(error_row(ctx, "train", mode, f"{name} step {len(run['losses']) + 1}", cause,
                                  step=len(run["losses"]) + 1))
    return rows


def explain_bn_rows(rows, layer, k, t, p, start):
    """Fit each side's running stats after k steps to the BN conventions; expected differences pass."""
    batches = t["bn"].get(layer, [])[:k]
    if len(batches) < k:
        return
    means, variances, n = [b[0] for b in batches], [b[1] for b in batches], batches[0][2]
    m0, v0 = start[f"{layer}.running_mean"], start[f"{layer}.running_var"]
    fits = {}
    for name, run in (("torch", t), ("paddle", p)):
        w = run["weights"][k]
        fits[name], _ = rules.bn_convention(m0, v0, means, variances, n,
                                            w[f"{layer}.running_mean"], w[f"{layer}.running_var"])
    cause, expected = rules.bn_stats_cause(fits["torch"], fits["paddle"], n)
    for row in rows:
        if row["name"] in (f"{layer}.running_mean", f"{layer}.running_var") and cause:
            if row["name"].endswith("running_var") or not expected:
                row["cause"] = cause
            if expected and row["status"] == "FAIL" and row["name"].endswith("running_var"):
                row["status"], row["within"] = "expected", True


def diagnose_training(task, rows, runs, earlier_failure):
    """The first failing step: name the optimizer convention behind it when gradients agreed."""
    failing = [r for r in rows if r["status"] in FAILED]
    if not failing:
        return
    first = min(failing, key=lambda r: (r["step"] or 0, r["name"] != "loss"))
    if earlier_failure:
        first["cause"] = first["cause"] or f"follows from {earlier_failure}"
        return
    t, p = runs["torch"], runs["paddle"]
    step1_params = [r for r in failing if r["step"] == 1 and r["name"] != "loss" and "running_" not in r["name"]]
    if step1_params and 1 in t["weights"] and 1 in p["weights"] and t["first"] is not None:
        opt = task.protocol.optimizer
        cause = rules.optimizer_cause(opt.name, opt.lr, opt.weight_decay, task.protocol.grad_clip,
                                      _trainable(task, t["weights"][0]), t["first"]["grads"],
                                      _trainable(task, t["weights"][1]), _trainable(task, p["weights"][1]))
        target = step1_params[0]
        target["cause"] = cause or target["cause"] or (
            "the optimizer step differs although the gradients agree: no known convention difference "
            "(clipping epsilon, coupled/decoupled weight decay) matches; compare lr and the update rule")
        if first is not target and not first["cause"]:
            first["cause"] = target["cause"]
        return
    if not first["cause"]:
        first["cause"] = (f"first step that leaves tolerance: {first['step']}; the earlier steps agree, so "
                          "the difference builds up over the steps")


# ---------------------------------------------------------------------------------------------
# 5. Schedule


def schedule_rows(task, sides, runs, ctx):
    sched = task.protocol.schedule
    if sched.name == "none" or any(r["error"] for r in runs.values()):
        return []
    if sched.name == "step":
        metrics = [1.0] * (3 * sched.step_size + 1)
    else:   # falls, then stalls long enough for two reductions
        metrics = [1.0 / (e + 1) for e in range(3)] + [0.25] * (3 * (sched.patience + 2))
    lrs = {}
    try:
        for name, side in sides.items():
            state = runs[name]["state"]
            lrs[name] = []
            for metric in metrics:
                side.scheduler_step(state, metric)
                lrs[name].append(side.current_lr(state))
    except (RuntimeError, ValueError, TypeError) as e:
        return [error_row(ctx, "schedule", "per-epoch", "lr", _error_text(e))]
    row = make_row(ctx, "schedule", "per-epoch", "lr", np.array(lrs["torch"]), np.array(lrs["paddle"]),
                   TOLERANCES["schedule"])
    row["step"] = len(metrics)
    if row["status"] != "ok":
        first = int(np.argmax(np.abs(np.array(lrs["torch"]) - np.array(lrs["paddle"])) > 0)) + 1
        row["cause"] = f"the learning rates part at epoch {first}: torch {lrs['torch'][first - 1]:g}, paddle {lrs['paddle'][first - 1]:g}"
    return [row]


# ---------------------------------------------------------------------------------------------
# One task


def with_optimizer(task, name):
    if not name:
        return task
    opt = task.protocol.optimizer
    new = Optimizer(name, opt.lr, momentum=0.9 if name == "momentum" else 0.0, weight_decay=opt.weight_decay)
    return replace(task, protocol=replace(task.protocol, optimizer=new))


def first_failure(rows):
    return next((r for r in rows if r["status"] in FAILED), None)


def describe(row):
    """'check/mode name step k' for a row (dict or pandas Series; step may be None, NaN or NA)."""
    step = row.get("step")
    has_step = step is not None and not (isinstance(step, float) and np.isnan(step)) and str(step) not in ("", "<NA>")
    return f"{row['check']}/{row['mode']} {row['name']}" + (f" step {int(step)}" if has_step else "")


def check_task(task, sides, config):
    """All checks of one task; returns its rows (dicts with COLUMNS)."""
    task = with_optimizer(task, config.optimizer)
    batch_size, steps, batch64, steps64 = parity_sizes(task, config)
    ctx = {"task": task.name, "dropout": DROPOUT_POLICY, "batch_size": batch_size, "steps": steps,
           "torch_version": sides["torch"].version, "paddle_version": sides["paddle"].version}
    if config.batches is not None:
        batches = [(np.asarray(x, np.float32), np.asarray(y, np.int64)) for x, y in config.batches]
        batch_size, steps = len(batches[0][1]), len(batches)
        batch64 = min(batch64, batch_size)
        steps64 = min(steps64, steps)
        ctx.update(batch_size=batch_size, steps=steps)
    else:
        batches = make_batches(task, config, batch_size, steps)
    if config.start_weights is not None:
        start = {k: np.asarray(v, np.float32) for k, v in config.start_weights.items()}
    else:
        start = randomise_bn(task, shared_weights(task.model, config.seed), config.seed)

    rows = weight_rows(task, sides, ctx, start)
    models = {name: side.build_model(task.model) for name, side in sides.items()}
    try:
        exported = import_start(task, sides, models, start)
    except (ValueError, AssertionError, RuntimeError, KeyError) as e:
        message = _error_text(e)
        rows.append(error_row(ctx, "weights", "start", "(import)",
                              _orientation_from_error(task, start, message) or message))
        return finish(rows)
    start_weight_rows = start_rows(task, ctx, exported)
    rows += start_weight_rows

    holder = {"step": 0}
    removers = [side.inspect.inject_dropout_masks(models[name], mask_maker(config.seed, holder))
                for name, side in sides.items()]
    forward_failure = None
    for mode in ("eval", "train"):    # eval first: a train-mode forward moves the BN statistics
        f_rows, _ = forward_rows(task, sides, models, ctx, config, batches[0][0], mode, start_weight_rows)
        rows += f_rows
        bad = first_failure(f_rows)
        if bad and mode == "train":
            forward_failure = describe(bad)
    for remove in removers:
        remove()

    runs = {name: train_run(task, side, start, batches, config.seed, "float32", models[name])
            for name, side in sides.items()}
    grad32 = loss_grad_rows(task, ctx, runs, config, "float32", forward_failure)
    before_training = first_failure(rows + grad32)
    train32 = train_rows(task, ctx, runs, config, "float32", start)
    after32 = eval_after_train_rows(task, sides, runs, ctx, config, batches[0][0]) \
        if not any(r["error"] for r in runs.values()) else []
    rows += grad32 + train32 + after32 + schedule_rows(task, sides, runs, ctx)
    if config.float64:
        small = [(x[:batch64], y[:batch64]) for x, y in batches[:steps64]]
        runs64 = {name: train_run(task, side, start, small, config.seed, "float64") for name, side in sides.items()}
        grad64 = loss_grad_rows(task, ctx, runs64, config, "float64", forward_failure)
        train64 = train_rows(task, ctx, runs64, config, "float64", start)
        mark_float_noise(task, grad32 + train32 + after32, grad64 + train64)
        rows += grad64 + train64
        # diagnose after the noise verdict: a float32 gap that float64 explains needs no cause
        before64 = first_failure(rows[:len(rows) - len(grad64 + train64)] + grad64)
        diagnose_training(task, train64, runs64, describe(before64) if before64 else None)
    diagnose_training(task, train32, runs, describe(before_training) if before_training else None)
    return finish(rows)


def eval_after_train_rows(task, sides, runs, ctx, config, x):
    """Eval forward after training, with torch's running statistics copied into paddle (notes/)."""
    models = {name: run["model"] for name, run in runs.items()}
    trained_t = sides["torch"].export_weights(models["torch"])
    trained_p = sides["paddle"].export_weights(models["paddle"])
    stats = {k: v for k, v in trained_t.items() if "running_" in k}
    if stats:
        sides["paddle"].import_weights(models["paddle"], dict(trained_p, **stats))
    rows, outs = [], {}
    errors = {}
    for name, side in sides.items():
        outs[name], _, errors[name] = side.inspect.layer_outputs(models[name], side.to_inputs(x), False)
    # the trained parameters differ within the train tolerance, so judge the outputs with it
    tol = (tolerance("forward", config)[0],
           tolerance("train-param-adam" if task.protocol.optimizer.name == "adam" else "train-param", config)[1])
    for layer in task.model.layers:
        t, p = outs["torch"].get(layer.name), outs["paddle"].get(layer.name)
        if t is None or p is None:
            break
        rows.append(make_row(ctx, "forward", "eval-after-train", layer.name, t, p, tol, kind=layer.kind))
    first = diagnose_forward(task, rows, outs, x, "eval", [])
    if first is not None and first["cause"].startswith(first["name"]):
        first["cause"] = "the trained parameters already differ (see train)"
    return rows


def mark_float_noise(task, rows32, rows64):
    """float32 differences that the float64 repeat does not show are rounding noise.

    The float64 run takes the same kind of steps with the same formulas; where it agrees (to 1e-6,
    far below float32's rounding), a float32 gap in a gradient (cancellation in a long sum) or after
    training steps (rounding amplified by the dynamics) is float noise, not a formula difference.
    """
    if not rows64 or any(r["status"] in FAILED for r in rows64):
        return
    adam = task.protocol.optimizer.name == "adam"
    steps64 = max((r["step"] or 0) for r in rows64 if r["check"] == "train") if \
        any(r["check"] == "train" for r in rows64) else 0
    for row in rows32:
        if row["status"] == "FAIL":
            row["status"], row["within"] = "noise", True
            row["cause"] = rules.explain("adam_noise" if adam and row["check"] == "train" else "float_noise",
                                         f"the float64 repeat (start gradients and {steps64} steps) agrees")


def finish(rows):
    for row in rows:
        for col in COLUMNS:
            row.setdefault(col, None)
    return rows


# ---------------------------------------------------------------------------------------------
# Summary and output


def summarise(rows):
    """One line per task: pass/fail and the first check, layer or step that leaves tolerance."""
    import pandas as pd
    frame = pd.DataFrame(rows, columns=COLUMNS)
    out = []
    for task, group in frame.groupby("task", sort=False):
        bad = group[group.status.isin(FAILED)]
        expected = group[group.status == "expected"]
        first = bad.iloc[0] if len(bad) else None
        cause = ""
        if first is not None:
            explained = bad[bad.cause.fillna("") != ""]
            cause = first.cause or (explained.cause.iloc[0] if len(explained) else
                                    "unexplained: no known convention difference matches")
        out.append({"task": task, "result": "FAIL" if first is not None else "pass",
                    "first_failure": describe(first) if first is not None else "",
                    "cause": cause, "rows": len(group), "failed": len(bad),
                    "expected_differences": "; ".join(sorted(set(expected.cause.str.split(":").str[0])))})
    return pd.DataFrame(out)


def check_table(frame):
    """Per task and check/mode: the worst row (largest max_rel)."""
    import pandas as pd
    out = []
    for (task, check, mode), group in frame.groupby(["task", "check", "mode"], sort=False):
        ranked = group.assign(_r=group.max_rel.fillna(np.inf)).sort_values("_r", ascending=False)
        worst = ranked.iloc[0]
        statuses = set(group.status)
        status = "FAIL" if statuses & set(FAILED) else ("expected" if "expected" in statuses else
                                                       ("noise" if "noise" in statuses else "ok"))
        out.append({"task": task, "check": check, "mode": mode, "n": len(group), "worst": worst["name"] +
                    (f"@{int(worst.step)}" if not pd.isna(worst.step) else ""),
                    "max_abs": group.max_abs.max(), "max_rel": group.max_rel.max(), "status": status})
    return pd.DataFrame(out)


def write_outputs(rows, out_dir):
    import pandas as pd

    from dualbench.common.fsutil import atomic_write_text
    from dualbench.common.results import write_table
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["step"] = pd.to_numeric(frame["step"]).astype("Int64")
    out_dir = Path(out_dir)
    write_table(out_dir / "parity.csv", frame)
    summary = summarise(rows)
    checks = check_table(frame)
    atomic_write_text(out_dir / "parity.md", markdown(frame, summary, checks))
    return frame, summary, checks


def _fmt(value):
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.2e}"


def markdown(frame, summary, checks):
    lines = ["# dualbench parity", ""]
    if len(frame):
        lines.append(f"torch {frame.torch_version.iloc[0]}, paddle {frame.paddle_version.iloc[0]}, CPU. "
                     f"Dropout: {DROPOUT_POLICY}.")
    lines += ["", "max_rel = max|torch - paddle| / max|torch|; within tolerance when max_abs <= atol + rtol * max|torch|.",
              "", "## Tasks", "", "| task | batch | steps | result | first failure | cause | expected differences |",
              "|---|---|---|---|---|---|---|"]
    sizes = frame.groupby("task", sort=False)[["batch_size", "steps"]].first()
    for _, s in summary.iterrows():
        lines.append(f"| {s.task} | {sizes.batch_size[s.task]} | {sizes.steps[s.task]} | {s.result} | "
                     f"{s.first_failure} | {s.cause} | {s.expected_differences} |")
    lines += ["", "## Largest error per check", "", "| task | check | mode | rows | worst | max_abs | max_rel | status |",
              "|---|---|---|---|---|---|---|---|"]
    for _, c in checks.iterrows():
        lines.append(f"| {c.task} | {c.check} | {c['mode']} | {c.n} | {c.worst} | {_fmt(c.max_abs)} | "
                     f"{_fmt(c.max_rel)} | {c.status} |")
    lines += ["", "## Tolerances", "", "| check | atol | rtol |", "|---|---|---|"]
    for check, (atol, rtol) in TOLERANCES.items():
        lines.append(f"| {check} | {atol:g} | {rtol:g} |")
    expected = frame[frame.status.isin(["expected", "noise"])]
    if len(expected):
        lines += ["", "## Expected differences", ""]
        for (task, status), group in expected.groupby(["task", "status"], sort=False):
            lines.append(f"- {task} ({status}, {len(group)} rows, e.g. {describe(group.iloc[0])}): {group.cause.iloc[0]}")
    return "\n".join(lines) + "\n"


def run_parity(tasks, config, out_dir, sides=None, echo=print):
    """Check every task, write OUT/parity.csv and OUT/parity.md; returns (rows frame, summary).
    Holds the lock on OUT throughout."""
    from dualbench.common.fsutil import folder_lock
    with folder_lock(out_dir, "parity"):
        return _run_parity(tasks, config, out_dir, sides, echo)


def _run_parity(tasks, config, out_dir, sides, echo):
    from tqdm import tqdm
    sides = sides or load_sides()
    rows = []
    for task in tqdm(tasks, desc="parity", unit="task", file=sys.stderr, leave=False, disable=len(tasks) < 2):
        try:
            rows += check_task(task, sides, config)
        except Exception as e:  # noqa: BLE001 - one task crashing is its FAIL row; the other tasks go on
            ctx = {"task": task.name, "dropout": DROPOUT_POLICY, "batch_size": config.batch_size,
                   "steps": config.steps, "torch_version": sides["torch"].version,
                   "paddle_version": sides["paddle"].version}
            rows += finish([error_row(ctx, "task", "-", "(crashed)", _error_text(e))])
        # after every task, atomically: an interrupt keeps the tasks already checked
        frame, summary, checks = write_outputs(rows, out_dir)
    if echo:
        import pandas as pd
        with pd.option_context("display.width", 200, "display.max_colwidth", 60, "display.max_rows", 2000):
            echo(checks.to_string(index=False, formatters={"max_abs": _fmt, "max_rel": _fmt}))
            echo("")
            for _, s in summary.iterrows():
                echo(f"{s.task}: {s.result}" + (f" at {s.first_failure}: {s.cause}" if s.result == "FAIL" else "")
                     + (f"  [expected: {s.expected_differences}]" if s.expected_differences else ""))
        echo(f"\nwrote {Path(out_dir) / 'parity.csv'} and {Path(out_dir) / 'parity.md'}")
    return frame, summary


# ---------------------------------------------------------------------------------------------
# CLI


def register(subparsers):
    p = subparsers.add_parser("parity", help="compare torch and paddle layer by layer, gradient by gradient "
                              "and step by step; name the convention behind any difference")
    p.add_argument("--task", help="task name or comma list (see `dualbench tasks`)")
    p.add_argument("--all", action="store_true", help="every task")
    p.add_argument("--steps", type=int, help=f"optimizer steps to compare (default {DEFAULT_STEPS}; fewer "
                   "for models too big for the time budget, i.e. food11-cnn)")
    p.add_argument("--optimizer", choices=["sgd", "momentum", "adam"], help="override the task's optimizer")
    p.add_argument("--atol", type=float, help="absolute tolerance for every float32 check (default: per check)")
    p.add_argument("--rtol", type=float, help="relative tolerance for every float32 check (default: per check)")
    p.add_argument("--batch-size", type=int, help="batch size (default: the task's, at most 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-float64", action="store_true", help="skip the float64 repeat of the training steps")
    p.add_argument("--dataset", help="use real batches from this dataset instead of seeded random inputs")
    p.add_argument("--data-path", type=Path, help="folder (or file) holding the dataset's files")
    p.add_argument("--out", type=Path, default=Path("runs/parity"), help="output folder (default runs/parity)")
    p.set_defaults(func=cmd_parity)


def cmd_parity(args):
    if args.all and args.task:
        raise UserError("give either --task or --all, not both")
    if not args.all and not args.task:
        raise UserError("--task is required (a name from `dualbench tasks`, a comma list), or --all")
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be at least 1, got {args.steps}")
    for flag in ("atol", "rtol"):
        value = getattr(args, flag)
        if value is not None and not (value >= 0 and np.isfinite(value)):
            raise UserError(f"--{flag} must be a finite number >= 0, got {value}")
    if args.batch_size is not None and args.batch_size < 2:
        raise UserError(f"--batch-size must be at least 2, got {args.batch_size}")
    tasks = select_tasks("all" if args.all else args.task)
    if not tasks:
        raise UserError("no task selected")
    from dualbench import backends
    backends.require("torch")
    backends.require("paddle")
    if args.dataset:
        from dualbench.common.data.sources import get_info
        info = get_info(args.dataset)
        for task in tasks:
            if tuple(info.shape) != tuple(task.model.input_shape):
                raise UserError(f"dataset '{args.dataset}' has images {info.shape}, task '{task.name}' "
                                f"expects {tuple(task.model.input_shape)}")
    config = ParityConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed, optimizer=args.optimizer,
                          atol=args.atol, rtol=args.rtol, float64=not args.no_float64, dataset=args.dataset,
                          data_path=args.data_path)
    _, summary = run_parity(tasks, config, args.out)
    if (summary.result == "FAIL").any():
        raise SystemExit(1)
