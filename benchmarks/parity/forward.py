"""Check 2's mechanics: record every matched module call on both sides, and compare them call by call.

Shared by the forward checks, the eval forward after training and `dualbench convert`'s check.
"""
import numpy as np

from dualbench.parity.conventions import rules
from dualbench.parity.kinds import NUMPY_ACTIVATIONS
from dualbench.parity.rows import error_row, make_row, stack


def record(mapping, side, model, x, train):
    """({(module, call): call}, model outputs, error, [(module, call)] in order) on one side."""
    names = [side.module_names[m.torch] for m in mapping.modules]
    if side.name == "torch":
        names += [f[0] for m in mapping.modules if m.fused for f in m.fused]
    calls, out, error = side.inspect.record_calls(model, x, train, list(dict.fromkeys(names)))
    return {(c["module"], c["call"]): c for c in calls}, out, error, [(c["module"], c["call"]) for c in calls]


def torch_value(cp, call):
    """The torch side of a compared call: its output, after the activation paddle fuses (if any)."""
    value = stack(call["outputs"])
    return NUMPY_ACTIVATIONS[cp.activation](value) if cp.activation else value


def compare_calls(mapping, sides, models, ctx, x, mode, tol):
    """Rows per matched call (torch execution order), the CallPairs they compare, and the records."""
    records = {name: record(mapping, side, models[name], x, mode != "eval") for name, side in sides.items()}
    errors = {name: r[2] for name, r in records.items() if r[2]}
    rows, compared = [], []
    for cp in mapping.call_pairs(records["torch"][3]):
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
        row = make_row(ctx, "forward", mode, cp.name, torch_value(cp, t), stack(p["outputs"]), tol, kind=cp.kind,
                       paddle_name=paddle_name)
        if t["inputs"] and p["inputs"] and np.shape(t["inputs"][0]) == np.shape(p["inputs"][0]):
            row["input_rel"] = rules.compare(t["inputs"][0], p["inputs"][0], 0, 0)["max_rel"]
        rows.append(row)
        compared.append(cp)
    return rows, compared, records


