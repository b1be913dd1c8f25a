"""Why a row left tolerance: the first module, check or step that departs, with a cause in words.

The rules themselves are pure numpy (parity.conventions.rules); this module decides which rule applies
to which row, from what the engine observed: the weights after import, the module's own settings,
its input and output shapes, the BatchNorm batch statistics, the optimizer's first step.
Verdicts other than FAIL: "expected" (torch's unbiased vs paddle's biased BatchNorm running
variance, fitted against every convention), "noise" (float32 rounding that the float64 repeat
does not show), "vacuous" (outputs near zero or constant: agreement proves nothing).
"""
import numpy as np

from dualbench.parity.conventions import optimizers as optimizer_conventions
from dualbench.parity.conventions.replay import modelled, replay
from dualbench.parity.conventions import rules
from dualbench.parity.conventions.sequence import SEQUENCE_COMPUTE
from dualbench.parity.kinds import BATCHNORM_KINDS, COMPOSITE_KINDS, DROPOUT_KINDS
from dualbench.parity.rows import FAILED, describe

# causes that name no proven convention, which a later check must not point to as proof
UNPROVEN = ("no known convention", "follows from", "the input of", "not diagnosed")

def call_of(records, side, key):
    return records[side][0].get(key) if records.get(side) else None


def module_weights(pair, torch_module):
    """The start weights of the module and everything inside it, under local names (weight, bias,
    running_mean; self_attn.in_proj_weight, linear1.weight for a Transformer layer)."""
    prefix = f"{torch_module}." if torch_module else ""
    return {name[len(prefix):]: value for name, value in pair.start.items() if name.startswith(prefix)}


def one_sided_weights(pair, cp):
    """Tensors only one side's layer holds (paddle's InstanceNorm scale and bias, torch's running statistics),
    under torch's local names, for a replay with the convention that gives torch's layer them or not."""
    return (pair.one_sided or {}).get(cp.torch, {})


def config_of(pair, side, module):
    return ((pair.tables or {}).get(side, {}).get(module) or {}).get("config", {})


def replay_cause(pair, cp, t_call, p_call, mode, mask, tol, paddle_out=None):
    """The convention whose flip makes the module's replay on the captured input reproduce paddle's
    output (parity.conventions.layers): a cause in words, '' when no known flip does, None when the layer
    is not modelled (or was compared through a fused activation). paddle_out: what to reproduce instead of
    paddle's own call's output (its output on torch's input, for a module whose input already differs)."""
    if cp.activation or cp.torch_output != (cp.torch, cp.torch_call) or not t_call["inputs"]:
        return None
    t_config, p_config = config_of(pair, "torch", cp.torch), config_of(pair, "paddle", cp.paddle)
    if p_config.get("fused_activation"):
        return None
    torch_out = t_call["outputs"][0]
    paddle_out = p_call["outputs"][0] if paddle_out is None else paddle_out
    try:
        proven = replay(cp.kind, t_call["inputs"], t_call.get("kwargs"),
                        {**one_sided_weights(pair, cp), **module_weights(pair, cp.torch)}, t_config,
                        p_config, torch_out, paddle_out, mode != "eval", mask, tol)
    except (ValueError, KeyError, TypeError, IndexError):   # settings the replay does not cover
        return None
    if proven is None:
        return None
    found = []
    best = min((gap for *_, gap in proven), default=0.0)
    for convention, torch_value, value, gap in sorted(proven, key=lambda p: p[3]):
        if gap > 10 * best + 1e-12:
            continue      # another flip reproduces paddle's output far better (exact GELU vs its tanh form)
        found.append(f"{convention.title}: replayed with {convention.key}={_words(value)} instead of torch's "
                     f"{_words(torch_value)}, {cp.name} reproduces paddle's output (max_abs {gap:.1e}). Defaults: "
                     f"torch {convention.torch}; paddle {convention.paddle}. Fix: {convention.fix}.")
    return " Or: ".join(found)


def _words(value):
    return f"{value:.4g}" if isinstance(value, float) else repr(value) if isinstance(value, str) else str(value)


def dropout_mask(pair, cp, t_call, mode, seed):
    """The 0/1 mask the forward check injected into this dropout call (train mode), or None."""
    if cp.kind not in DROPOUT_KINDS or mode == "eval" or not t_call["inputs"]:
        return None
    from dualbench.parity.pair import mask_maker
    config = config_of(pair, "torch", cp.torch)
    return mask_maker(seed, {"step": 0})(cp.torch, tuple(t_call["inputs"][0].shape), config.get("p", 0.5),
                                         config.get("channelwise", False))


def diagnose_forward(pair, rows, pairs, records, mode, weight_rows_start, after=None, seed=0, earlier=()):
    """Put a cause on the first module call that leaves tolerance. rows and pairs (CallPair) align;
    records: {side: ({(module, call): recorded call}, outputs, error, order)}; earlier: the rows of the
    forward checks already diagnosed (eval before train), which a call the replay cannot reproduce refers to.

    In order: the weights it received differ (the weights check names why); its input already
    differs (then the difference arises in code between modules); a known convention, proven by
    replaying the module on the captured input with that convention flipped; otherwise it is
    unexplained, with the numbers."""
    tensors = {m.torch: bool(m.tensors) for m in pair.mapping.modules}
    previous, deferred = None, []
    for row, cp in zip(rows, pairs):
        if row["status"] not in FAILED:
            previous = row["name"]
            continue
        if cp.kind in COMPOSITE_KINDS and cp.kind not in SEQUENCE_COMPUTE and not after:
            deferred.append(row)   # a stack of layers: the cause is in one of its parts, diagnosed next
            continue
        t_call = call_of(records, "torch", cp.torch_output)
        p_call = call_of(records, "paddle", (cp.paddle, cp.paddle_call))
        tol = (row["atol"], row["rtol"])
        cause, input_note, unreplayed = None, "", False
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
        if cause is None and t_call is not None and p_call is not None and t_call["inputs"] and p_call["inputs"]:
            agreement = rules.compare(t_call["inputs"][0], p_call["inputs"][0], *tol)
            if not agreement["within"]:
                where = f"after {previous}" if previous else "before it"
                cause = (f"the input of {cp.name} already differs (max_abs {agreement['max_abs']:.1e}, max_rel "
                         f"{agreement['max_rel']:.1e}) although every module before it agrees: the difference "
                         f"arises {where}, in code that is not a module (a functional call in forward()); "
                         "compare that part of the two forward() methods")
            else:
                input_note = f"the same input (max_rel {agreement['max_rel']:.1e})"
                mask = dropout_mask(pair, cp, t_call, mode, seed)
                found = replay_cause(pair, cp, t_call, p_call, mode, mask, tol)
                unreplayed = found is None and modelled(cp.kind)
                if found:
                    cause = found
                elif found == "":
                    cause = (f"no known convention explains this: {cp.name} ({cp.kind}) gets {input_note} but its "
                             f"output differs (max_abs {row['max_abs']:.2e}, max_rel {row['max_rel']:.2e}); "
                             f"replayed with each known convention of a {cp.kind} flipped, none reproduces paddle's "
                             "output. Compare the layer's construction and settings")
        if cause is None and row["status"] == "error":
            cause = row["cause"]
        if cause is None and row["cause"].startswith("output shapes differ"):
            cause = (f"{cp.name} ({cp.kind}) gets {input_note or 'the same input'} on both sides but its "
                     f"{row['cause']}: compare the layer's kernel size, stride, padding, dilation and ceil_mode")
        if cause is None and unreplayed:
            cause = unreplayed_cause(row, cp, input_note, earlier)
        if cause is None:
            cause = (f"no known convention explains this: {cp.name} ({cp.kind}) gets {input_note or 'the same input'} "
                     f"on both sides but computes a different output (max_abs {row['max_abs']:.2e}, max_rel "
                     f"{row['max_rel']:.2e}); compare the layer's construction")
        row["cause"] = cause
        for outer in deferred:
            outer["cause"] = f"follows from its part {describe(row)}"
        if not after:   # after training the weights differ within tolerance: no module's difference is its own
            diagnose_independent(pair, rows, pairs, records, mode, row, seed)
        return row
    for outer in deferred:
        outer["cause"] = f"{outer['name']} differs although each of its parts agrees: compare what it does between them"
    return deferred[0] if deferred else None


def unreplayed_cause(row, cp, input_note, earlier):
    """A layer the replay models, whose replay with torch's settings does not reproduce torch's own output of
    this call (dropout modules inside a Transformer layer in train mode, weights moved by training): the replay
    proves nothing here, so no cause is named; a cause proven for the same module in an earlier forward
    check is pointed to."""
    proven = next((r for r in earlier if r["check"] == "forward" and r["name"] == row["name"] and
                   r["status"] in FAILED and r["cause"] and not r["cause"].startswith(UNPROVEN)), None)
    where = (f"; in {describe(proven)} the replay proved: {proven['cause'].split(':')[0]}" if proven else
             "; compare the layer's construction")
    return (f"{cp.name} ({cp.kind}) gets {input_note} on both sides but computes a different output (max_abs "
            f"{row['max_abs']:.2e}, max_rel {row['max_rel']:.2e}); not diagnosed in {row['mode']}: the replay "
            f"with torch's settings does not reproduce torch's own output of this call{where}")


def composite_depth(cp):
    """Sort key: (0, 0) for a module of one computation; (1, -depth) for a composite, the innermost first."""
    return (1, -len(cp.name.split("."))) if cp.kind in COMPOSITE_KINDS else (0, 0)


def diagnose_independent(pair, rows, pairs, records, mode, first, seed=0):
    """The failing rows after the first: each module was also run alone on torch's input of the same call
    (records["local"]). Where it then agrees, its difference is inherited ("follows from" the innermost
    module around it that differs by itself, else the first); where it still differs, the difference is its
    own: an independent one, diagnosed by replay against that local output, so that a model with several
    independent convention differences gets each named.

    A module inside one that differs by itself keeps the keyword arguments its parent passes (an attention
    mask a Transformer layer converts): when no convention of its own explains its local difference, it
    follows from the parent. A composite (a Transformer stack, its layers) whose part differs by itself
    follows from that part."""
    local = records.get("local", {})
    first_cp = next((cp for row, cp in zip(rows, pairs) if row is first), None)
    independent = {first_cp.torch if first_cp else first["name"]: first}    # torch module -> its row
    seen, own = {first["name"]}, []
    for row, cp in zip(rows, pairs):
        shapes_only = row["cause"].startswith("output shapes differ")   # make_row's note, not a diagnosis
        if row["status"] not in FAILED or (row["cause"] and not shapes_only) or row["name"] in seen or \
                row["name"] != cp.name:
            continue
        seen.add(row["name"])
        own.append((row, cp, *own_difference(pair, row, cp, records, local, mode, seed)))

    def around(module):
        """The row of the innermost module around `module` that differs by itself, or None."""
        outer = [m for m in independent if m != module and contains(m, module)]
        return independent[max(outer, key=len)] if outer else None

    # the modules of one computation whose replay proves a cause first, then the composites, innermost first
    # (a part that differs by itself decides them), then the unexplained modules of one computation (inside
    # a module that differs by itself, they follow from it)
    inherited, pending = [], []
    for row, cp, verdict, text in sorted(own, key=lambda entry: composite_depth(entry[1])):
        inner = [independent[m] for m in independent if m != cp.torch and contains(cp.torch, m)]
        if cp.kind in COMPOSITE_KINDS and inner:
            row["cause"] = f"follows from its part {inner[0]['name']}"
        elif verdict == "unexplained" and cp.kind not in COMPOSITE_KINDS:
            pending.append((row, cp, text))
        elif verdict == "agrees":
            inherited.append((row, cp, text))
        else:
            row["cause"] = text
            independent[cp.torch] = row
    for row, cp, text in pending:
        if around(cp.torch) is None:
            row["cause"] = text
            independent[cp.torch] = row
        else:
            inherited.append((row, cp, f" (inside it: fed torch's input with the keyword arguments it passes, "
                                       f"paddle's {cp.paddle} alone differs too, max_rel {row['local_rel']:.1e}, "
                                       "and no convention of its own explains that)"))
    for row, cp, note in inherited:
        row["cause"] = f"follows from {describe(around(cp.torch) or first)}{note}"


def contains(outer, name):
    """Whether torch module `name` is inside torch module `outer` (the model itself, '', holds every one)."""
    return outer == "" or name.startswith(f"{outer}.")


def own_difference(pair, row, cp, records, local, mode, seed):
    """('agrees', note) when paddle's module alone, fed torch's input, agrees (or cannot run it); else
    ('proven', cause) when a replay against that local output proves a convention, or ('unexplained',
    cause)."""
    own_output = local.get((cp.paddle, cp.paddle_call))
    local_rel = row.get("local_rel")
    if own_output is None or local_rel is None or not np.isfinite(local_rel):
        return "agrees", ""
    tol = (row["atol"], row["rtol"])
    t_call = call_of(records, "torch", cp.torch_output)
    reference = t_call["outputs"][0] if t_call and t_call["outputs"] else None
    scale = float(np.abs(reference).max()) if reference is not None and np.size(reference) else np.nan
    if not np.isfinite(scale) or local_rel <= tol[1] + tol[0] / max(scale, 1e-30):
        return "agrees", f" (fed torch's input, paddle's {cp.paddle} alone agrees: max_rel {local_rel:.1e})"
    found = replay_cause(pair, cp, t_call, None, mode, dropout_mask(pair, cp, t_call, mode, seed), tol,
                         paddle_out=own_output[0])
    what = found or (f"no known convention explains it; compare {cp.name}'s construction" if found == "" else
                     f"compare {cp.name}'s construction and settings")
    return ("proven" if found else "unexplained",
            f"an independent difference: fed torch's input, paddle's {cp.paddle} alone differs too "
            f"(max_rel {local_rel:.1e}): {what}")


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


def diagnose_training(pair, rows, kept, earlier_failure, history=None, rtol=None):
    """The first failing step: when the gradients agreed, replay the update with each optimizer
    convention flipped (parity.conventions.optimizers) and name the flips that reproduce paddle's.

    kept: {step: {name: (torch update, paddle update)}} of the parameters that failed there;
    history(names, steps) -> (params, grads, norms, torch updates) from a replay pass, or None."""
    failing = [r for r in rows if r["status"] in FAILED]
    if not failing:
        return
    first = min(failing, key=lambda r: (r["step"] or 0, r["name"] != "loss"))
    if earlier_failure:
        first["cause"] = first["cause"] or f"follows from {earlier_failure}"
        return
    params_failing = [r for r in failing if r["name"] != "loss" and "running_" not in r["name"] and r["step"]]
    step = min((r["step"] for r in params_failing), default=None)
    target = next((r for r in params_failing if r["step"] == step), None)
    cause = None
    if target is not None and history is not None and kept.get(step):
        names = sorted(kept[step])
        found = history(names, step)
        if found is not None:
            params, grads, norms, torch_moves = found
            base = optimizer_conventions.settings_of(pair.task.protocol)
            proven = optimizer_conventions.replay(base, params, grads, norms, torch_moves[-1],
                                                  {n: kept[step][n][1] for n in names},
                                                  rtol if rtol is not None else target["rtol"])
            if proven:
                best = {}   # variants of one convention (per-tensor clipping with or without epsilon): the closest
                for flip, misfit, odd in proven:
                    if flip.title not in best or misfit < best[flip.title][1]:
                        best[flip.title] = (flip, misfit, odd)
                cause = " Or: ".join(
                    f"{flip.title}: replaying step {step} of {', '.join(names[:3])}{' ...' if len(names) > 3 else ''} "
                    f"with this flip reproduces {odd}'s update (misfit {misfit:.1e} of the update's size), the "
                    f"task's settings the other's. torch: {flip.torch}; paddle: {flip.paddle}. Fix: {flip.fix}."
                    for flip, misfit, odd in best.values())
            elif proven is not None:
                cause = (f"no known convention explains this: the gradients agree, but the update of step {step} "
                         f"differs (max_rel {target['max_rel']:.2e} at {target['name']}); replayed with each "
                         f"known convention of {base.name} flipped (weight decay, epsilon, betas, momentum, "
                         "clipping, schedule stepping), none reproduces paddle's update; compare the optimizers' "
                         "construction")
    if target is not None:
        target["cause"] = cause or target["cause"] or (
            f"no known convention explains this: the gradients agree, but the update of step {step} differs "
            f"(max_rel {target['max_rel']:.2e} at {target['name']}); compare the optimizers' construction")
        if first is not target and not first["cause"]:
            first["cause"] = target["cause"]
        return
    if not first["cause"]:
        first["cause"] = (f"first step that leaves tolerance: {first['step']}; the earlier steps agree, so "
                          "the difference builds up over the steps")
