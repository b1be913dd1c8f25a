"""Why a row left tolerance: the first module, check or step that departs, with a cause in words.

The rules themselves are pure numpy (common.parity_rules); this module decides which rule applies
to which row, from what the engine observed: the weights after import, the module's own settings,
its input and output shapes, the BatchNorm batch statistics, the optimizer's first step.
Verdicts other than FAIL: "expected" (torch's unbiased vs paddle's biased BatchNorm running
variance, fitted against every convention), "noise" (float32 rounding that the float64 repeat
does not show), "vacuous" (outputs near zero or constant: agreement proves nothing).
"""
import numpy as np

from dualbench.common import parity_rules as rules
from dualbench.common.layer_kinds import BATCHNORM_KINDS, DROPOUT_KINDS
from dualbench.parity.rows import FAILED

POOL_KINDS = ("maxpool", "avgpool", "maxpool1d", "avgpool1d", "maxpool3d", "avgpool3d")


def call_of(records, side, key):
    return records[side][0].get(key) if records.get(side) else None


def diagnose_forward(pair, rows, pairs, records, mode, weight_rows_start, after=None):
    """Put a cause on the first module call that leaves tolerance. rows and pairs (CallPair) align;
    records: {side: ({(module, call): recorded call}, outputs, error, order)}."""
    table = pair.tables["torch"] if pair.tables else {}
    tensors = {m.torch: bool(m.tensors) for m in pair.mapping.modules}
    previous = None
    for row, cp in zip(rows, pairs):
        if row["status"] not in FAILED:
            previous = row["name"]
            continue
        t_call = call_of(records, "torch", cp.torch_output)
        p_call = call_of(records, "paddle", (cp.paddle, cp.paddle_call))
        cause = None
        if after:
            cause = f"follows from {after}"
        elif tensors.get(cp.torch):
            prefix = f"{cp.torch}." if cp.torch else ""
            bad = [r for r in weight_rows_start if r["name"].startswith(prefix) and r["status"] != "ok"]
            bn_stats = [r for r in bad if "running" in r["name"]]
            if bad:
                cause = next((r["cause"] for r in bad if r["cause"]), None) or \
                    f"the weights of {cp.torch} differ after import ({', '.join(r['name'] for r in bad)})"
                if cp.kind in BATCHNORM_KINDS and mode == "eval" and bn_stats and len(bn_stats) == len(bad):
                    cause = rules.explain("bn_eval_stats", cause)
        elif cp.kind in POOL_KINDS and t_call is not None and p_call is not None and t_call["inputs"]:
            config = table.get(cp.torch, {}).get("config", {})
            if "kernel" in config:
                cause = rules.pool_cause(t_call["inputs"][0].shape, t_call["outputs"][0].shape,
                                         p_call["outputs"][0].shape, config["kernel"], config.get("stride"),
                                         config.get("padding", 0))
        elif cp.kind in DROPOUT_KINDS and mode == "train":
            cause = rules.explain("dropout_masks", f"{cp.name} differs with the same input")
        if cause is None and row["status"] == "error":
            cause = row["cause"]
        if cause is None and row["cause"].startswith("output shapes differ"):
            cause = (f"{cp.name} ({cp.kind}) receives the same input on both sides "
                     f"({'the batch' if previous is None else previous + ' agrees'}) but its {row['cause']}: "
                     "compare the layer's kernel size, stride, padding, dilation and ceil_mode")
        if cause is None:
            cause = (f"{cp.name} ({cp.kind}) receives the same input on both sides "
                     f"({'the batch' if previous is None else previous + ' agrees'}) but computes a different "
                     f"output: no known convention difference matches; compare the layer's construction")
        row["cause"] = cause
        return row
    return None


def vacuous_reason(output):
    """Why agreement on this output would prove nothing (near zero, or the same for every input), or None."""
    if output is None or output.size == 0 or not np.isfinite(output).all():
        return None
    scale = float(np.abs(output).max())
    if scale < 1e-6:
        return f"every output is within {scale:.1e} of zero"
    if output.shape[0] > 1 and float(np.abs(output - output[:1]).max()) <= 1e-6 * scale:
        return "the output is the same for every input of the batch"
    return None


# ---------------------------------------------------------------------------------------------
# Gradients and training


def biases_before_bn(pair):
    """Bias names of conv/linear modules directly followed by BatchNorm: their true gradient is zero."""
    modules = pair.mapping.modules
    return {f"{a.torch}.bias": f"{a.torch}.weight" for a, b in zip(modules, modules[1:])
            if a.kind in ("conv", "conv1d", "conv3d", "linear") and b.kind in BATCHNORM_KINDS}


def mark_bn_bias_noise(pair, rows, reference):
    """Failed rows of a bias before BatchNorm: judge them against the layer's weight scale instead.

    reference: {weight name: its max |value|} (gradient, or parameter change) on the torch side.
    """
    pairs = biases_before_bn(pair)
    for row in rows:
        weight = pairs.get(row["name"])
        if weight is None or row["status"] != "FAIL" or not np.isfinite(row["max_abs"]):
            continue
        adam_step = row["check"] == "train" and row["mode"] == "float32" and \
            pair.task.protocol.optimizer.name == "adam"
        if adam_step or row["max_abs"] <= row["atol"] + row["rtol"] * reference.get(weight, 0.0):
            row["status"], row["within"], row["cause"] = "noise", True, rules.explain("bn_bias_noise")


def mark_float_noise(pair, rows32, rows64):
    """float32 differences that the float64 repeat does not show are rounding noise.

    The float64 run takes the same kind of steps with the same formulas; where it agrees (to 1e-6,
    far below float32's rounding), a float32 gap in a gradient (cancellation in a long sum) or after
    training steps (rounding amplified by the dynamics) is float noise, not a formula difference.
    """
    if not rows64 or any(r["status"] in FAILED for r in rows64):
        return
    adam = pair.task.protocol.optimizer.name == "adam"
    steps64 = max((r["step"] or 0) for r in rows64 if r["check"] == "train") if \
        any(r["check"] == "train" for r in rows64) else 0
    for row in rows32:
        if row["status"] == "FAIL":
            row["status"], row["within"] = "noise", True
            row["cause"] = rules.explain("adam_noise" if adam and row["check"] == "train" else "float_noise",
                                         f"the float64 repeat (start gradients and {steps64} steps) agrees")


def bn_weights(pair, layer):
    """The new-batch weights the two models configured for a BatchNorm layer (torch momentum,
    1 - paddle momentum), besides the defaults 0.1 and 0.9."""
    module = next((m for m in pair.mapping.modules if m.torch == layer), None)
    found = [0.1, 0.9]
    for side, name in (("torch", layer), ("paddle", module.paddle if module else None)):
        weight = ((pair.tables or {}).get(side, {}).get(name) or {}).get("config", {}).get("new_batch_weight")
        if isinstance(weight, float) and 0 < weight < 1:
            found.append(round(weight, 9))
    return tuple(found)


def explain_bn_rows(rows, layer, k, bn_torch, bn_paddle, stats, start, weights=(0.1, 0.9)):
    """Fit each side's running stats after k steps to the BN conventions, each from the batch
    statistics its own layer saw (after step 1 the two sides' inputs differ by rounding); expected
    differences pass. bn_*: {layer: [(mean, var, n)]}; stats: {side: {name: running stat}}."""
    if f"{layer}.running_mean" not in start:
        return
    m0, v0 = start[f"{layer}.running_mean"], start[f"{layer}.running_var"]
    fits, n = {}, None
    for name, bn in (("torch", bn_torch), ("paddle", bn_paddle)):
        batches = bn.get(layer, [])[:k]
        if len(batches) < k:
            return
        means, variances, n = [b[0] for b in batches], [b[1] for b in batches], batches[0][2]
        w = stats[name]
        fits[name], _ = rules.bn_convention(m0, v0, means, variances, n, w[f"{layer}.running_mean"],
                                            w[f"{layer}.running_var"], weights=weights)
    cause, expected = rules.bn_stats_cause(fits["torch"], fits["paddle"], n)
    for row in rows:
        if row["name"] in (f"{layer}.running_mean", f"{layer}.running_var") and cause:
            if row["name"].endswith("running_var") or not expected:
                row["cause"] = cause
            if expected and row["status"] == "FAIL" and row["name"].endswith("running_var"):
                row["status"], row["within"] = "expected", True


def diagnose_training(pair, rows, kept, earlier_failure):
    """The first failing step: name the optimizer convention behind it when gradients agreed.
    kept: the float32 start gradients and the step-1 parameter changes {name: (torch, paddle)} of
    the tensors that failed at step 1 (training.Lockstep.kept)."""
    failing = [r for r in rows if r["status"] in FAILED]
    if not failing:
        return
    first = min(failing, key=lambda r: (r["step"] or 0, r["name"] != "loss"))
    if earlier_failure:
        first["cause"] = first["cause"] or f"follows from {earlier_failure}"
        return
    step1_params = [r for r in failing if r["step"] == 1 and r["name"] != "loss" and "running_" not in r["name"]]
    changes, grads = kept.get("step1", {}), kept.get("grads", {})
    if step1_params and changes and all(name in grads for name in changes):
        opt = pair.task.protocol.optimizer
        start = {name: np.asarray(pair.start[name], np.float64) for name in changes}
        cause = rules.optimizer_cause(opt.name, opt.lr, opt.weight_decay, pair.task.protocol.grad_clip,
                                      start, {name: grads[name] for name in changes},
                                      {name: start[name] + changes[name][0] for name in changes},
                                      {name: start[name] + changes[name][1] for name in changes},
                                      grads_for_norm=grads)
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


