"""A model pair's inputs and labels: random ones, or arrays from a .npz bound to each model's forward()
parameters, per side; the loss that fits the output, and its labels.

Inputs as the checks carry them: one numpy array (the first positional input), or
{"args": [arrays], "kwargs": {name: array}}; when the two models are called differently (the mapping
file renames an input for one side: torch's TransformerEncoder takes `src_key_padding_mask`, paddle's
`src_mask`), SideInputs holds one such call per framework. Integer arrays (token ids) keep their dtype.
"""
import inspect as pyinspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dualbench.common.errors import UserError

LABEL_KEYS = ("y", "labels")


@dataclass
class SideInputs:
    """The same inputs, bound for each framework's model."""
    torch: object
    paddle: object

    def __getitem__(self, side):
        return getattr(self, side)


def for_side(x, side):
    """What the side's model is called with."""
    return x[side] if isinstance(x, SideInputs) else x


def batch_size(x):
    """The batch size: the first array's first dimension (of the torch side's call)."""
    x = for_side(x, "torch")
    if isinstance(x, dict):
        first = (list(x.get("args", [])) + [v for v in x.get("kwargs", {}).values() if isinstance(v, np.ndarray)])
        return int(np.shape(first[0])[0])
    return int(np.shape(x[0] if isinstance(x, (list, tuple)) else x)[0])


def describe_inputs(x):
    """'[2, 16] int64' or 'input_ids [2, 16] int64, mask [2, 16] bool' for messages and the mapping file."""
    x = for_side(x, "torch")
    if isinstance(x, dict):
        named = [(f"arg{i}", a) for i, a in enumerate(x.get("args", []))] + list(x.get("kwargs", {}).items())
        return ", ".join(f"{k} {list(np.shape(v))} {np.asarray(v).dtype}" for k, v in named)
    arrays = x if isinstance(x, (list, tuple)) else [x]
    return ", ".join(f"{list(np.shape(a))} {np.asarray(a).dtype}" for a in arrays)


def map_arrays(x, fn):
    """x with fn applied to every array of it: SideInputs, {"args", "kwargs"}, lists, or one array."""
    if isinstance(x, SideInputs):
        return SideInputs(map_arrays(x.torch, fn), map_arrays(x.paddle, fn))
    if isinstance(x, dict):
        return {"args": [map_arrays(a, fn) for a in x.get("args", [])],
                "kwargs": {k: map_arrays(v, fn) for k, v in x.get("kwargs", {}).items()}}
    if isinstance(x, (list, tuple)):
        return [map_arrays(a, fn) for a in x]
    return fn(x) if isinstance(x, np.ndarray) else x


def cast_inputs(x, dtype):
    """Floating arrays in the run's dtype; integer and boolean arrays (token ids, masks) unchanged."""
    return map_arrays(x, lambda a: a.astype(dtype) if np.issubdtype(a.dtype, np.floating) else a)


def read_npz(path):
    """({key: array} in the file's order, labels or None); one-line errors naming the file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a .npz of numeric arrays ({str(e).splitlines()[0]})") from None
    labels = next((arrays.pop(k) for k in LABEL_KEYS if k in arrays), None)
    if not arrays:
        raise UserError(f"{path}: holds no input array (only labels)")
    # no shared first dimension is required: a [T, T] attention mask, h0 [layers, batch, hidden] and a
    # sequence-first [T, N, F] input are inputs as well as a batch-first one
    if all(a.ndim == 0 for a in arrays.values()):
        raise UserError(f"{path}: holds only scalars ({', '.join(arrays)}); the model needs at least one array")
    return arrays, labels


def arrays_of(x):
    """Every array of one call's inputs (both sides of SideInputs)."""
    found = []
    map_arrays(x, found.append)
    return found


def rows_sliceable(x, labels):
    """Whether every input array and the labels share their first axis, the batch (then the first k rows
    are a smaller batch); a [T, T] mask, an h0 [layers, batch, hidden] or a sequence-first input under
    per-sequence labels is not."""
    arrays = arrays_of(x) + [np.asarray(labels)]
    return len({a.shape[0] if a.ndim else None for a in arrays}) == 1 and arrays[0].ndim > 0


def take_rows(x, k):
    """The first k samples of every input array (rows_sliceable inputs)."""
    return map_arrays(x, lambda a: a[:k])


def forward_parameters(model):
    """forward()'s parameter names, in order (self excluded), and whether it takes **kwargs."""
    try:
        params = pyinspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return [], True
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def bind(arrays, model, renames, side, where):
    """{"args", "kwargs"} for one model: keys that name forward() parameters (after the side's renames)
    become keyword arguments; when none does, the arrays are positional, in the file's order."""
    names, any_keyword = forward_parameters(model)
    renamed = {renames.get(k, k): v for k, v in arrays.items()}
    known = [k for k in renamed if k in names or any_keyword]
    if not known:
        return {"args": list(arrays.values()), "kwargs": {}}
    unknown = [k for k in renamed if k not in known]
    if unknown:
        raise UserError(f"{where}: {', '.join(unknown)} name no parameter of the {side} model's forward() "
                        f"({', '.join(names)}); rename it for the {side} side in the mapping file's \"inputs\"")
    return {"args": [], "kwargs": renamed}


def bind_pair(arrays, models, renames, where):
    """The arrays bound for both models: one call when both bind alike, else SideInputs."""
    calls = {side: bind(arrays, models[side], renames.get(side, {}), side, where) for side in ("torch", "paddle")}
    if len(arrays) == 1 and not any(c["kwargs"] for c in calls.values()):
        return next(iter(arrays.values()))            # one positional array: the plain form
    same = calls["torch"]["kwargs"].keys() == calls["paddle"]["kwargs"].keys() and \
        len(calls["torch"]["args"]) == len(calls["paddle"]["args"])
    return calls["torch"] if same else SideInputs(calls["torch"], calls["paddle"])


def input_renames(mapping_file):
    """The mapping file's "inputs": {"torch": {npz key: parameter}, "paddle": {...}} (empty without one)."""
    if not mapping_file:
        return {}
    import json
    try:
        data = json.loads(Path(mapping_file).read_text())
    except (OSError, ValueError):
        return {}      # read_mapping says what is wrong with the file
    renames = data.get("inputs", {}) if isinstance(data, dict) else {}
    if not (isinstance(renames, dict) and all(isinstance(v, dict) for v in renames.values())):
        raise UserError(f"{mapping_file}: \"inputs\" must be {{\"torch\": {{key: parameter}}, \"paddle\": {{...}}}}")
    return renames


def random_inputs(shape, n_steps, seed):
    """Seeded standard-normal float32 inputs (images normalised to mean 0, std 1 look like this)."""
    rng = np.random.default_rng([seed, 1234])
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n_steps)]


def default_loss(output):
    """ce for [N, C] class scores, ce_last for [N, T, V] (token logits), mse otherwise."""
    if output is None or output.ndim < 2 or not np.issubdtype(output.dtype, np.floating):
        return "mse"
    if output.ndim == 2 and output.shape[1] > 1:
        return "ce"
    return "ce_last" if output.ndim == 3 and output.shape[-1] > 1 else "mse"


def make_labels(loss, output, classes, n_steps, seed):
    """Labels per step for the loss: class ids on axis 1 (ce) or the last axis (ce_last), float targets
    shaped like the output (mse), or unused zeros (sum)."""
    rng = np.random.default_rng([seed, 77])
    n = output.shape[0]
    if loss == "ce":   # classes on axis 1, one label per sample and position ([N], [N, L], [N, H, W] ...)
        shape = (n,) + tuple(output.shape[2:])
        return [rng.integers(0, classes, shape).astype(np.int64) for _ in range(n_steps)]
    if loss == "ce_last":
        return [rng.integers(0, classes, output.shape[:-1]).astype(np.int64) for _ in range(n_steps)]
    if loss == "mse":
        return [rng.standard_normal(output.shape).astype(np.float32) for _ in range(n_steps)]
    return [np.zeros(n, np.int64) for _ in range(n_steps)]


def check_loss(loss, output, classes):
    """The number of classes for the loss; one-line errors when the output does not fit."""
    if loss not in ("ce", "mse", "sum", "ce_last"):
        raise UserError(f"unknown loss '{loss}' (known: ce, ce_last, mse, sum)")
    if loss in ("ce", "ce_last"):
        axis = 1 if loss == "ce" else -1
        if output is None or output.ndim < 2:
            raise UserError(f"--loss {loss} needs [N, classes, ...] outputs; the torch model returns "
                            f"{list(np.shape(output))} (use --loss mse or sum)")
        classes = classes or output.shape[axis]
        if classes > output.shape[axis]:
            raise UserError(f"--classes {classes} is more than the model's {output.shape[axis]} outputs")
    return classes
