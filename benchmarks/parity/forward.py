"""Check 2's mechanics: record every matched module call on both sides, and compare them call by call,
output by output; then the model's own outputs, leaf by leaf.

Shared by the forward checks, the eval forward after training and `dualbench convert`'s check. A module
(or model) whose output is a tuple is compared tensor by tensor (`lstm[0]`, `lstm[1]`, ...); a tensor
only one side returns (torch's MultiheadAttention also returns the attention weights by default) is
listed, not failed.
"""
import numpy as np

from dualbench.parity.conventions import rules
from dualbench.parity.inputs import for_side
from dualbench.parity.kinds import COMPOSITE_KINDS, NUMPY_ACTIVATIONS
from dualbench.parity.match import run_on_torch_input
from dualbench.parity.rows import error_row, make_row, stack


def record(mapping, side, model, x, train):
    """({(module, call): call}, model output leaves, error, [(module, call)] in order) on one side."""
    names = [side.module_names[m.torch] for m in mapping.modules]
    if side.name == "torch":
        names += [f[0] for m in mapping.modules if m.fused for f in m.fused]
    calls, out, error = side.inspect.record_calls(model, for_side(x, side.name), train, list(dict.fromkeys(names)))
    return {(c["module"], c["call"]): c for c in calls}, out, error, [(c["module"], c["call"]) for c in calls]


def torch_value(cp, call):
    """The torch side of a compared call: its output, after the activation paddle fuses (if any)."""
    value = stack(call["outputs"])
    return NUMPY_ACTIVATIONS[cp.activation](value) if cp.activation else value


def compared_values(cp, t, p):
    """The (torch, paddle) arrays of a call's first row: the only outputs (the fused activation applied to
    torch's), or the first output of each when a side returns several."""
    t_outs, p_outs = t["outputs"], p["outputs"]
    if (len(t_outs) > 1 and len(p_outs) > 1 and not cp.activation) or \
            (len(t_outs) > 1 and len(p_outs) == 1 and np.shape(t_outs[0]) == np.shape(p_outs[0])):
        return t_outs[0], p_outs[0]
    return torch_value(cp, t), stack(p_outs)


def one_sided_row(ctx, check, mode, name, side, shape, kind="", paddle_name=None):
    """A tensor only one framework returns: listed (status expected), never a failure."""
    row = error_row(ctx, check, mode, name, "", kind=kind, paddle_name=paddle_name)
    row.update(status="expected", within=True, shape="x".join(map(str, shape)),
               cause=f"only {side} returns this output ({list(shape)}): listed, not compared")
    return row


def call_rows(ctx, mode, cp, t, p, tol, paddle_name):
    """Rows comparing one call: one row for a single output (the fused activation applied), else one per
    output tensor, and the tensors only one side returns."""
    t_outs, p_outs = t["outputs"], p["outputs"]
    first = make_row(ctx, "forward", mode, cp.name, *compared_values(cp, t, p), tol, kind=cp.kind,
                     paddle_name=paddle_name)
    if len(t_outs) <= 1 or cp.activation:
        return [first]
    if len(p_outs) == 1:
        if np.shape(t_outs[0]) != np.shape(p_outs[0]):
            return [first]
        return [first] + [one_sided_row(ctx, "forward", mode, f"{cp.name}[{i}]", "torch", np.shape(a), cp.kind,
                                        paddle_name) for i, a in enumerate(t_outs[1:], start=1)]
    rows = [first] + [make_row(ctx, "forward", mode, f"{cp.name}[{i}]", a, b, tol, kind=cp.kind,
                               paddle_name=paddle_name) for i, (a, b) in enumerate(zip(t_outs[1:], p_outs[1:]), 1)]
    longer, side = (t_outs, "torch") if len(t_outs) > len(p_outs) else (p_outs, "paddle")
    return rows + [one_sided_row(ctx, "forward", mode, f"{cp.name}[{i}]", side, np.shape(a), cp.kind, paddle_name)
                   for i, a in enumerate(longer[min(len(t_outs), len(p_outs)):], start=min(len(t_outs), len(p_outs)))]


def compare_calls(mapping, sides, models, ctx, x, mode, tol):
    """Rows per matched call (torch execution order), the CallPairs they compare (one per row), and the
    records. The model's own outputs follow (output_rows)."""
    records = {name: record(mapping, side, models[name], x, mode != "eval") for name, side in sides.items()}
    errors = {name: r[2] for name, r in records.items() if r[2]}
    records["local"] = {}        # (paddle module, call) -> its outputs on torch's input
    rows, compared = [], []
    composites = {m.torch for m in mapping.modules if m.kind in COMPOSITE_KINDS}
    for cp in mapping.call_pairs(entry_order(records["torch"][3], composites)):
        t, p = records["torch"][0].get(cp.torch_output), records["paddle"][0].get((cp.paddle, cp.paddle_call))
        paddle_name = cp.paddle + (f"#{cp.paddle_call}" if cp.paddle_call > 1 else "")
        if t is None and p is None and not errors:
            continue            # run in neither model in this mode (e.g. an auxiliary head)
        if t is None or p is None:
            missing = "torch" if t is None else "paddle"
            message = "; ".join(f"{n}: {errors[n]}" for n in errors) or f"{cp.name} did not run in the {missing} model"
            rows.append(error_row(ctx, "forward", mode, cp.name, message, kind=cp.kind, tol=tol,
                                  paddle_name=paddle_name))
            compared.append(cp)
            break
        new = call_rows(ctx, mode, cp, t, p, tol, paddle_name)
        if t["inputs"] and p["inputs"] and np.shape(t["inputs"][0]) == np.shape(p["inputs"][0]):
            new[0]["input_rel"] = rules.compare(t["inputs"][0], p["inputs"][0], 0, 0)["max_rel"]
        local = local_output(sides, models, cp, records["torch"][0].get((cp.torch, cp.torch_call)), p, mode != "eval")
        if local is not None:
            records["local"][(cp.paddle, cp.paddle_call)] = local
            reference, value = compared_values(cp, t, {"outputs": local})
            new[0]["local_rel"] = rules.compare(reference, value, 0, 0)["max_rel"]
        rows += new
        compared += [cp] * len(new)
    return rows, compared, records


def entry_order(order, composites):
    """The torch calls [(module, call)] as they were entered rather than finished: a composite (a Transformer
    layer) before the submodules it runs, so that its row comes first and a difference in what it computes
    around them (norm_first, its activation) is diagnosed at it."""
    out = list(order)
    for index, (module, call) in enumerate(order):
        if module not in composites:
            continue
        prefix = f"{module}." if module else ""
        start = out.index((module, call))
        while start > 0 and out[start - 1][0].startswith(prefix) and out[start - 1][0] != module:
            start -= 1
        out.remove((module, call))
        out.insert(start, (module, call))
    return out


def local_output(sides, models, cp, t_in, p, train):
    """The paddle module run alone on torch's captured input of the same call (its own keyword arguments
    kept): what it computes without the difference it inherits, so that several independent differences
    each show at their own module. None when it cannot run that input."""
    if t_in is None or not t_in["inputs"]:
        return None
    try:
        return run_on_torch_input(sides["paddle"].inspect, models["paddle"], cp.paddle, t_in, p, train)
    except Exception:  # noqa: BLE001 - a module that cannot take the other side's input has no local row
        return None


def output_rows(ctx, mode, records, tol):
    """The models' own outputs, leaf by leaf (output, output[0], output[1][0] ...): matched by where they
    sit, else in order; a leaf only one side returns is listed."""
    leaves = {side: records[side][1] or [] for side in ("torch", "paddle")}
    if not leaves["torch"] or not leaves["paddle"]:
        return []
    paths = {side: [path for path, _ in found] for side, found in leaves.items()}
    if set(paths["torch"]) & set(paths["paddle"]):
        pairs = [(path, dict(leaves["torch"])[path], dict(leaves["paddle"]).get(path)) for path in paths["torch"]]
        extra = [(path, value) for path, value in leaves["paddle"] if path not in paths["torch"]]
    else:
        pairs = [(t_path, t_value, p_value) for (t_path, t_value), (_, p_value) in zip(leaves["torch"], leaves["paddle"])]
        pairs += [(path, value, None) for path, value in leaves["torch"][len(leaves["paddle"]):]]
        extra = leaves["paddle"][len(leaves["torch"]):]
    rows = []
    for path, t_value, p_value in pairs:
        name = f"({path})"
        rows.append(one_sided_row(ctx, "forward", mode, name, "torch", np.shape(t_value)) if p_value is None else
                    make_row(ctx, "forward", mode, name, t_value, p_value, tol, kind="output"))
    return rows + [one_sided_row(ctx, "forward", mode, f"({path})", "paddle", np.shape(value)) for path, value in extra]
