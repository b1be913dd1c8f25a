"""Pure-numpy rules behind `dualbench parity`: how two tensors are compared, and what the weights,
labels and BatchNorm statistics observed say.

Every rule looks only at numbers the parity engine observed (weights, BatchNorm batch statistics
and running statistics, label arrays, error messages). Layers, losses and optimizer steps are
diagnosed by replaying them with a convention flipped (parity.conventions.layers,
parity.conventions.optimizers); the BatchNorm statistics here are fitted the same way, by
simulating each convention's update. No torch, no paddle here.
"""
import numpy as np

# The known convention differences, in plain words. A diagnosis starts with the key's title.
KNOWN = {
    "linear_orientation": (
        "Linear weight orientation: torch stores a Linear weight as [out, in] (y = x W^T + b), paddle "
        "as [in, out] (y = x W + b); 2-D Linear weights must be transposed when copied between them."),
    "bn_momentum": (
        "BatchNorm momentum convention: torch's momentum (0.1) is the weight given to the new batch, "
        "paddle's (0.9) the weight kept on the old running value; paddle momentum = 1 - torch momentum."),
    "bn_variance": (
        "BatchNorm biased vs unbiased running variance: torch updates running_var with the unbiased "
        "batch variance (x n/(n-1)), paddle with the biased one; train-mode outputs agree and "
        "running_var drifts apart by about 1/n relative (an expected convention difference)."),
    "default_init": (
        "framework-default initialisation: the weights were not copied, so each framework kept its "
        "own initial values (torch Linear/Conv: W, b ~ U(+-1/sqrt(fan_in)); paddle Linear: "
        "XavierUniform W, b = 0; paddle Conv: Normal(0, sqrt(2/fan_in)) W, b = 0; and the RNG streams "
        "differ even for the same distribution); copy the canonical weights."),
    "ce_labels": (
        "cross-entropy label shape/dtype: torch needs int64 labels of shape [N] (it rejects [N,1] "
        "and float labels), paddle also accepts [N,1] and silently casts float labels; a [N,1] label "
        "against an [N] output broadcasts to [N,N] in an MSE loss. Keep labels [N] int64 in both."),
    "bn_eval_stats": (
        "BatchNorm running statistics in eval mode: eval uses running_mean/running_var, so they must "
        "be copied (torch running_var -> paddle _variance) before eval outputs can agree."),
    "bn_bias_noise": (
        "bias before BatchNorm: in train mode BatchNorm subtracts the batch mean, so the gradient of "
        "the preceding layer's bias is exactly zero in exact arithmetic; both frameworks hold rounding "
        "noise there (and Adam turns that noise into steps of up to lr), so it is compared against "
        "the scale of the same layer's weight gradient instead of its own."),
    "float_noise": (
        "float32 rounding amplified over the steps: the float64 repeat of the same steps agrees, so "
        "the update formulas are the same and the float32 gap is rounding noise that the training "
        "dynamics amplified."),
    "adam_noise": (
        "float32 rounding amplified by Adam: on near-zero gradients Adam's g/(sqrt(v)+eps) turns "
        "rounding-level gradient differences into parameter differences of a few percent of lr per "
        "step; the float64 repeat agrees, so this is float noise, not a formula difference."),
}


def explain(key, detail=""):
    """The known difference's sentence, with what was observed appended."""
    return KNOWN[key] + (f" Observed: {detail}" if detail else "")


# ---------------------------------------------------------------------------------------------
# Comparing two tensors


def compare(ref, other, atol, rtol):
    """max |a-b|, max |a-b| / max|ref| and whether max |a-b| <= atol + rtol * max|ref|.

    The relative error is taken against the tensor's largest magnitude, not element by element:
    elementwise relative error is meaningless on near-zero entries (a ReLU output of 1e-9), while
    the maximum absolute error still catches a single outlier (a mean would hide it).
    """
    ref, other = np.asarray(ref), np.asarray(other)
    if ref.shape != other.shape:
        return {"max_abs": np.nan, "max_rel": np.nan, "scale": np.nan, "worst_index": "",
                "within": False, "shape_ok": False}
    if ref.dtype == other.dtype and ref.size and np.array_equal(ref, other):   # bit-exact: one pass
        scale = float(np.abs(ref).max()) if np.issubdtype(ref.dtype, np.number) else 0.0
        if np.isfinite(scale):
            return {"max_abs": 0.0, "max_rel": 0.0, "scale": scale, "worst_index": "", "within": True,
                    "shape_ok": True}
    if ref.size > CHUNK:
        return _compare_chunked(ref, other, atol, rtol)
    dtype = np.result_type(ref.dtype, other.dtype, np.float32)
    a, b = ref.astype(dtype, copy=False), other.astype(dtype, copy=False)
    diff = np.abs(a - b)
    finite = bool(np.isfinite(diff).all())
    if not finite:   # both diverged at the same elements alike: compare the finite rest
        same = (np.isfinite(a) == np.isfinite(b)).all() and bool(
            np.all((a == b) | np.isfinite(a) | (np.isnan(a) & np.isnan(b))))
        if same:
            a, b = np.where(np.isfinite(a), a, 0), np.where(np.isfinite(b), b, 0)
            diff = np.abs(a - b)
            finite = True
    max_abs = float(diff.max()) if diff.size and finite else (0.0 if not diff.size else np.inf)
    scale = float(np.abs(a).max()) if a.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else np.inf)
    worst = np.unravel_index(int(np.nanargmax(diff)), diff.shape) if diff.size and finite else ()
    return {"max_abs": max_abs, "max_rel": max_rel, "scale": scale,
            "worst_index": ",".join(str(int(i)) for i in worst),
            "within": bool(finite and max_abs <= atol + rtol * scale), "shape_ok": True}


CHUNK = 1 << 22   # compare() works on big tensors (a vgg11 fc weight: 100 million values) in chunks


def _compare_chunked(ref, other, atol, rtol):
    """compare() a few million values at a time, so that no temporary is as big as the tensor."""
    a, b = ref.reshape(-1), other.reshape(-1)
    dtype = np.result_type(ref.dtype, other.dtype, np.float32)
    max_abs, scale, worst, finite = 0.0, 0.0, 0, True
    for i in range(0, a.size, CHUNK):
        x, y = a[i:i + CHUNK].astype(dtype, copy=False), b[i:i + CHUNK].astype(dtype, copy=False)
        diff = np.abs(x - y)
        if not np.isfinite(diff).all():
            finite = finite and bool(np.all((x == y) | (np.isnan(x) & np.isnan(y))))
            diff = np.where(np.isfinite(diff), diff, 0.0 if finite else np.inf)
        j = int(np.argmax(diff))
        if diff[j] > max_abs:
            max_abs, worst = float(diff[j]), i + j
        scale = max(scale, float(np.abs(np.where(np.isfinite(x), x, 0)).max()))
    if not finite:
        max_abs = np.inf
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else np.inf)
    index = np.unravel_index(worst, ref.shape)
    return {"max_abs": max_abs, "max_rel": max_rel, "scale": scale,
            "worst_index": ",".join(str(int(i)) for i in index),
            "within": bool(finite and max_abs <= atol + rtol * scale), "shape_ok": True}


def _close(a, b, rel=1e-4):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return False
    return float(np.abs(a - b).max(initial=0.0)) <= rel * max(float(np.abs(a).max(initial=0.0)), 1e-30)


# ---------------------------------------------------------------------------------------------
# Weights


def _init_family(kind, weight, bias):
    """Which initialisation a layer's values look like (by std and zero bias), or None."""
    if weight is None or weight.ndim < 2:
        return None
    fan_in = int(np.prod(weight.shape[1:]))
    fan_out = int(weight.shape[0] * np.prod(weight.shape[2:]))
    std = float(np.std(weight))
    zero_bias = bias is not None and not np.any(bias)
    families = {"torch default U(+-1/sqrt(fan_in))": (1 / np.sqrt(3 * fan_in), False),
                "Kaiming normal N(0, sqrt(2/fan_in)), bias 0": (np.sqrt(2 / fan_in), True)}
    if kind == "linear":
        families["paddle default XavierUniform, bias 0"] = (np.sqrt(2 / (fan_in + fan_out)), True)
    best, best_err = None, np.inf
    for name, (expected_std, bias_zero) in families.items():
        err = abs(np.log(std / expected_std)) + (0 if bias_zero == zero_bias else 1.0)
        if err < best_err:
            best, best_err = name, err
    return best if best_err < 0.25 else None


def weight_cause(name, kind, ref, other, ref_all, other_all, ref_side="torch", other_side="paddle"):
    """Why one canonical tensor differs between the sides (a KNOWN sentence), or None.

    ref_all / other_all are the whole canonical dicts, for rules that look at the layer's other
    tensors (bias of the same layer, the other BatchNorm statistic).
    """
    if other is None:
        return None
    ref, other = np.asarray(ref), np.asarray(other)
    layer, field = name.rsplit(".", 1)
    if kind == "linear" and field == "weight" and ref.ndim == 2:
        if other.shape != ref.shape and other.shape == ref.T.shape:
            return explain("linear_orientation", f"{name} arrives as {list(other.shape)} where the canonical "
                           f"layout is {list(ref.shape)} ([out, in]).")
        if other.shape == ref.shape and ref.shape[0] == ref.shape[1] and _close(ref.T, other):
            return explain("linear_orientation", f"{other_side}'s {name} equals the transpose of {ref_side}'s "
                           f"(square {list(ref.shape)}, so no shape error could catch it).")
    if kind == "bn2d" and field in ("running_mean", "running_var"):
        peer = f"{layer}.{'running_var' if field == 'running_mean' else 'running_mean'}"
        if peer in ref_all and _close(ref_all[peer], other) and not _close(ref, other):
            return (f"BatchNorm statistics swapped: {other_side}'s {name} holds {ref_side}'s {peer} "
                    f"(paddle names them _mean/_variance; map them by name, not by order).")
    if kind in ("linear", "conv") and ref.shape == other.shape and ref.size > 1:
        corr = np.corrcoef(ref.ravel(), other.ravel())[0, 1] if field == "weight" else 0.0
        if field == "weight" and abs(corr) < 0.5:
            fam_ref = _init_family(kind, ref, ref_all.get(f"{layer}.bias"))
            fam_other = _init_family(kind, other, other_all.get(f"{layer}.bias"))
            detail = (f"{name} is uncorrelated between the sides (corr {corr:.2f}); {ref_side} looks like "
                      f"{fam_ref or 'no known default'}, {other_side} like {fam_other or 'no known default'}.")
            return explain("default_init", detail)
        if field == "bias" and not np.any(other) and np.any(ref):
            return explain("default_init", f"{other_side}'s {name} is all zeros (paddle's default bias) "
                           f"while {ref_side}'s is not.")
    return None


# ---------------------------------------------------------------------------------------------
# Layers


# ---------------------------------------------------------------------------------------------
# BatchNorm running statistics


BN_CONVENTIONS = {  # (weight of the new batch, unbiased variance) -> words
    (0.1, True): "torch convention (new-batch weight 0.1, unbiased variance)",
    (0.1, False): "paddle convention (momentum 0.9 kept, biased variance)",
    (0.9, True): "reversed momentum (new-batch weight 0.9), unbiased variance",
    (0.9, False): "reversed momentum (new-batch weight 0.9), biased variance",
}


def bn_words(convention):
    """Words for a (new-batch weight, unbiased) convention, also for weights a model configured."""
    weight, unbiased = convention
    return BN_CONVENTIONS.get(convention) or (f"new-batch weight {weight:g} (paddle momentum {1 - weight:g}), "
                                              f"{'unbiased' if unbiased else 'biased'} variance")


def simulate_bn(start_mean, start_var, batch_means, batch_vars, n, new_weight, unbiased):
    """Running statistics after the batches under one convention (float64)."""
    mean, var = np.asarray(start_mean, np.float64), np.asarray(start_var, np.float64)
    factor = n / (n - 1) if unbiased else 1.0
    for m, v in zip(batch_means, batch_vars):
        mean = (1 - new_weight) * mean + new_weight * np.asarray(m, np.float64)
        var = (1 - new_weight) * var + new_weight * factor * np.asarray(v, np.float64)
    return mean, var


def _rel_err(sim, observed):
    return float(np.abs(sim - observed).max() / max(np.abs(sim).max(), 1e-12))


def bn_convention(start_mean, start_var, batch_means, batch_vars, n, mean, var, noise=1e-5, weights=(0.1, 0.9)):
    """Fit one side's running statistics to the conventions; None where no convention fits.

    Returns ((new-batch weight from the mean, (new-batch weight, unbiased) from the variance), error);
    the weight from the mean is "?" where the means moved too little to tell.
    A variance fit counts only if its residual is well below the gap between the biased and the
    unbiased simulation (or below float32 noise when that gap is itself at noise level).
    weights: the new-batch weights to try (the default 0.1 and its reversal 0.9, plus what the two
    models configured).
    """
    weights = sorted(set(weights))
    conventions = [(w, unbiased) for w in weights for unbiased in (True, False)]
    fits = {c: simulate_bn(start_mean, start_var, batch_means, batch_vars, n, *c) for c in conventions}
    mean_err = {w: _rel_err(fits[(w, True)][0], mean) for w in weights}
    mean_weight = min(mean_err, key=mean_err.get)
    # the means tell the conventions apart only where they moved more than rounding does: a channel
    # whose batch mean is zero in exact arithmetic (after a BatchNorm and a bias-free conv) holds
    # only rounding noise, about 1e-8 of the data's scale
    data_scale = float(np.sqrt(np.abs(np.asarray(batch_vars, np.float64)).max())) if len(batch_vars) else 1.0
    spread = max(float(np.abs(fits[(a, True)][0] - fits[(b, True)][0]).max()) for a in weights for b in weights)
    if spread <= noise * max(data_scale, 1e-30):
        mean_weight = "?"
    elif mean_err[mean_weight] > max(0.1, noise):
        mean_weight = None
    var_err = {c: _rel_err(fits[c][1], var) for c in conventions}
    best = min(var_err, key=var_err.get)
    gap = _rel_err(fits[(best[0], True)][1], fits[(best[0], False)][1])
    accepted = var_err[best] <= max(0.25 * gap, noise)
    return (mean_weight, best if accepted else None), var_err[best]


def bn_stats_cause(conv_ref, conv_other, n, ref_side="torch", other_side="paddle"):
    """(cause, expected) from the two sides' fitted BN conventions (see bn_convention)."""
    if conv_ref is None or conv_other is None:
        return None, False
    (mean_ref, var_ref), (mean_other, var_other) = conv_ref, conv_other
    if mean_ref != mean_other and "?" not in (mean_ref, mean_other):
        def words(w):
            return "no known update" if w is None else f"new-batch weight {w:g} (torch momentum {w:g} / paddle {1 - w:g})"
        return explain("bn_momentum", f"running_mean: {ref_side} updates with {words(mean_ref)}, "
                       f"{other_side} with {words(mean_other)}."), False
    if var_ref is None or var_other is None:
        odd = other_side if var_other is None else ref_side
        return (f"BatchNorm running variance: {odd}'s running_var follows none of the known conventions "
                f"(torch: unbiased, paddle: biased batch variance; momentum 0.1 new / 0.9 kept), so this is "
                f"not the expected biased/unbiased difference."), False
    words = f"{ref_side} follows the {bn_words(var_ref)}, {other_side} the {bn_words(var_other)}"
    if var_ref[0] != var_other[0]:
        return explain("bn_momentum", f"running_var: {words}."), False
    if var_ref[1] != var_other[1]:
        expected = var_ref[1] and not var_other[1]   # torch unbiased, paddle biased, the same weight
        return explain("bn_variance", f"{words}; n = {n} values per channel, 1/(n-1) = {1 / (n - 1):.2e}."), expected
    return None, False


# ---------------------------------------------------------------------------------------------
# Losses and labels


def label_cause(labels, error=None):
    """labels: {side: (shape, dtype name)}; a side whose label is not [N] int64, or a label error."""
    odd = {side: info for side, info in labels.items()
           if info is not None and (len(info[0]) != 1 or info[1] != "int64")}
    label_words = ("target", "label", "expected scalar type long", "multi-target", "0d or 1d")
    if odd:
        return explain("ce_labels", "; ".join(f"{side} got labels of shape {list(shape)} and dtype {dtype}"
                                              for side, (shape, dtype) in odd.items())
                       + (f" ({error})" if error else "") + ".")
    if error and any(w in error.lower() for w in label_words):
        return explain("ce_labels", error)
    return None
