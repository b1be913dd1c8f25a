"""Check 1, weights: moving weights between the frameworks through the mapping is bit-exact.

From each framework's own freshly built model: export -> import into the other -> export -> back,
every tensor compared after every leg (torch > paddle > torch and paddle > torch > paddle); then the
start weights of every later check, compared after import into both models.
"""
import re

import numpy as np

from dualbench.parity.conventions import rules
from dualbench.parity.rows import TOLERANCES, error_row, error_text, make_row

IMPORT_ERRORS = (ValueError, AssertionError, RuntimeError, KeyError)


def paddle_names(pair):
    return {t.torch: ", ".join(t.paddle_parts) for t in pair.mapping.tensors}


def orientation_from_error(pair, weights, message):
    """An import error whose message shows a Linear weight's transposed shape."""
    numbers = [tuple(int(v) for v in re.split(r"[,\s]+", m.strip()) if v)
               for m in re.findall(r"[\[(]\s*(\d+\s*,\s*\d+)\s*[\])]", message)]
    for name, w in weights.items():
        if pair.mapping.kind_of_tensor(name) == "linear" and name.endswith(".weight") and w.shape[0] != w.shape[1]:
            if w.shape[::-1] in numbers:
                return rules.explain("linear_orientation", f"importing {name} {list(w.shape)} failed: {message}")
    return None


def blank_copy(pair, side):
    """A copy of the side's model with every floating tensor set to NaN: an import that leaves a
    tensor unwritten cannot go unnoticed."""
    model = pair.fresh({side.name: side}, side.name)
    arrays = side.inspect.state_arrays(model)
    side.inspect.load_state_arrays(model, {k: np.full_like(v, np.nan) for k, v in arrays.items()
                                           if np.issubdtype(v.dtype, np.floating)})
    return model


def weight_rows(pair, sides, ctx):
    """Round trips from each framework's own initialisation: into the other framework's model (a
    copy holding its own initial weights), and back into a blank (NaN) copy of the first."""
    rows = []
    tol = TOLERANCES["weights"]
    names = paddle_names(pair)
    for origin, other in (("torch", "paddle"), ("paddle", "torch")):
        a, b = sides[origin], sides[other]
        src = a.export_weights(pair.fresh(sides, origin))
        current = src
        for mode, side, make in ((f"{origin}>{other}", b, lambda s: pair.fresh(sides, s.name)),
                                 (f"{origin}>{other}>{origin}", a, lambda s: blank_copy(pair, s))):
            try:
                model = make(side)
                side.import_weights(model, current)
                current = side.export_weights(model)
            except IMPORT_ERRORS as e:
                message = error_text(e)
                cause = orientation_from_error(pair, current, message) or f"import into {side.name} failed: {message}"
                rows.append(error_row(ctx, "weights", mode, "(import)", cause, tol=tol))
                break
            for name in src:
                got = current.get(name)
                if got is None:
                    rows.append(error_row(ctx, "weights", mode, name, f"{name} missing after {mode}", tol=tol,
                                          paddle_name=names.get(name)))
                    continue
                row = make_row(ctx, "weights", mode, name, src[name], got, tol,
                               kind=pair.mapping.kind_of_tensor(name), paddle_name=names.get(name))
                if row["status"] != "ok":
                    if np.issubdtype(np.asarray(got).dtype, np.floating) and np.isnan(got).all():
                        row["cause"] = f"the import into {side.name} did not write {name} (it still holds the blank NaN)"
                    else:
                        row["cause"] = rules.weight_cause(name, row["kind"], src[name], got, src, current,
                                                          origin, side.name) or row["cause"]
                rows.append(row)
    return rows


def backend_weight_rows(pair, sides, ctx):
    """A built-in task's own weight code against the mapping: the backends' weights.import_weights /
    export_weights (the studies' shared initialisation uses them) must put the start weights where the
    mapping reads them, and read back what the mapping put. A difference is named by the tensor's rule
    (a square Linear weight left untransposed equals the other side's transpose)."""
    rows, tol, names = [], TOLERANCES["weights"], paddle_names(pair)
    for name, side in sides.items():
        if side.task_import_weights is None or side.task_export_weights is None:
            continue
        model = pair.fresh(sides, name)
        legs = ((f"{name} import_weights", lambda m: side.task_import_weights(m, {k: v.copy() for k, v in
                                                                                   pair.start.items()}),
                 side.export_weights, "reading back through the mapping"),
                (f"{name} export_weights", lambda m: side.import_weights(m, pair.start), side.task_export_weights,
                 f"backends/{name}/weights.export_weights"))
        for mode, put, read, reader in legs:
            try:
                put(model)
                got = read(model)
            except IMPORT_ERRORS as e:
                rows.append(error_row(ctx, "weights", mode, "(backend)", f"{mode} failed: {error_text(e)}", tol=tol))
                continue
            for tensor, value in pair.start.items():
                row = make_row(ctx, "weights", mode, tensor, value, got.get(tensor), tol,
                               kind=pair.mapping.kind_of_tensor(tensor), paddle_name=names.get(tensor))
                if row["status"] != "ok":
                    row["cause"] = (f"{mode} (backends/{name}/weights.py) disagrees with the mapping, read by "
                                    f"{reader}: " + (rules.weight_cause(tensor, row["kind"], value, got.get(tensor),
                                                                        pair.start, got, "the start weights",
                                                                        mode) or "compare the two"))
                rows.append(row)
    return rows


def import_start(sides, models, start):
    """Import the start weights into both models; returns each side's canonical view of them."""
    for name, side in sides.items():
        side.import_weights(models[name], {k: v.copy() for k, v in start.items()})
    return {name: sides[name].export_weights(models[name]) for name in sides}


def start_rows(pair, ctx, exported):
    rows = []
    ref, other = exported["torch"], exported["paddle"]
    names = paddle_names(pair)
    for name in ref:
        if name not in other:
            rows.append(error_row(ctx, "weights", "start", name, f"paddle has no {name}", paddle_name=names.get(name)))
            continue
        row = make_row(ctx, "weights", "start", name, ref[name], other[name], TOLERANCES["weights"],
                       kind=pair.mapping.kind_of_tensor(name), paddle_name=names.get(name))
        if row["status"] != "ok":
            row["cause"] = rules.weight_cause(name, row["kind"], ref[name], other[name], ref, other) or row["cause"]
        rows.append(row)
    return rows


def canonical_dtype(weights, dtype):
    """The weights in dtype (floating tensors only; no copy where they already are)."""
    return {k: (np.asarray(v).astype(dtype, copy=False) if np.issubdtype(np.asarray(v).dtype, np.floating)
                else np.asarray(v)) for k, v in weights.items()}
