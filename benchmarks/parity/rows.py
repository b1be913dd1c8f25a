"""Parity rows: one comparison of two tensors (or an error) per row, and the default tolerances.

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
                                                             1e-7    5e-2   (Adam: ~0.05 lr per step)
  train BN statistics    4.9e-6 / 9e-6 (SGD)                 1e-6    1e-4
  float64 loss, grads    5e-13 / 6e-12                       1e-12   1e-9
  float64 train          1e-10 / 4e-7 (Adam, food11-cnn); Momentum 9e-8 because paddle keeps mu
                         in float32 (0.8999999762) even for float64 parameters
                                                             1e-12   1e-5
  schedule (lr/epoch)    1.4e-20 / 1.4e-18                   0       1e-12

Model pairs from torchvision and paddle.vision (resnet18, vgg11, mobilenet_v2, ... at 2x3x224x224)
stay inside the same tolerances; their measured errors are in the README.
"""
import numpy as np

from dualbench.parity.conventions import rules

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
FIXED_TOLERANCES = ("weights", "float64", "float64-train", "schedule")   # --atol/--rtol leave these

CHECK_ORDER = ("weights", "forward", "loss", "grad", "train", "schedule")
FAILED = ("FAIL", "error")
# input_rel (forward rows): max_rel between the two sides' inputs of the module call, so that
# max_rel / input_rel is how much the module amplified the difference it received; local_rel: max_rel of
# the paddle module run alone on torch's input of the same call (its own difference, nothing inherited)
COLUMNS = ["task", "check", "mode", "name", "paddle_name", "step", "kind", "shape", "max_abs", "max_rel",
           "input_rel", "local_rel", "scale", "worst_index", "atol", "rtol", "within", "status", "cause", "dropout",
           "batch_size", "steps", "torch_version", "paddle_version"]


def tolerance(check, config):
    atol, rtol = TOLERANCES[check]
    if check in FIXED_TOLERANCES:
        return atol, rtol
    return (config.atol if config.atol is not None else atol, config.rtol if config.rtol is not None else rtol)


def stack(outputs):
    """A call's outputs as one array: the tensor itself, or all of them flattened end to end."""
    if outputs is None:
        return None
    if isinstance(outputs, np.ndarray):
        return outputs
    if len(outputs) == 1:
        return outputs[0]
    return np.concatenate([np.asarray(o, np.float64).ravel() for o in outputs]) if outputs else np.zeros(0)


def make_row(ctx, check, mode, name, ref, other, tol, step=None, kind="", paddle_name=None):
    c = rules.compare(ref, other, *tol)
    shape = "x".join(str(d) for d in np.shape(ref)) if c["shape_ok"] else \
        f"{list(np.shape(ref))} vs {list(np.shape(other))}"
    row = dict(ctx, check=check, mode=mode, name=name, paddle_name=paddle_name, step=step, kind=kind, shape=shape,
               max_abs=c["max_abs"], max_rel=c["max_rel"], scale=c["scale"], worst_index=c["worst_index"],
               atol=tol[0], rtol=tol[1], within=c["within"], status="ok" if c["within"] else "FAIL", cause="")
    if not c["shape_ok"]:
        row["cause"] = f"output shapes differ: torch {list(np.shape(ref))}, paddle {list(np.shape(other))}"
    return row


def error_row(ctx, check, mode, name, message, step=None, kind="", tol=(np.nan, np.nan), paddle_name=None):
    return dict(ctx, check=check, mode=mode, name=name, paddle_name=paddle_name, step=step, kind=kind, shape="",
                max_abs=np.nan, max_rel=np.nan, scale=np.nan, worst_index="", atol=tol[0], rtol=tol[1],
                within=False, status="error", cause=message)


def error_text(e):
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def finish(rows):
    for row in rows:
        for col in COLUMNS:
            row.setdefault(col, None)
    return rows


def first_failure(rows):
    return next((r for r in rows if r["status"] in FAILED), None)


def describe(row):
    """'check/mode name step k' for a row (dict or pandas Series; step may be None, NaN or NA)."""
    step = row.get("step")
    has_step = step is not None and not (isinstance(step, float) and np.isnan(step)) and str(step) not in ("", "<NA>")
    return f"{row['check']}/{row['mode']} {row['name']}" + (f" step {int(step)}" if has_step else "")
