"""Canonical weights (name -> numpy, torch orientation, BN statistics included) and .pdparams checkpoints.

paddle differs from the canonical layout in two ways: Linear
weights are [in, out] (transposed here), and BatchNorm statistics are `_mean` / `_variance`.
"""
from pathlib import Path

import numpy as np
import paddle

from dualbench.common import safepickle
from dualbench.common.errors import DataError

_STAT_NAMES = {"_mean": "running_mean", "_variance": "running_var"}
_PADDLE_STAT = {v: k for k, v in _STAT_NAMES.items()}


def _linear_weights(model):
    return {f"{name}.weight" for name, layer in model.named_sublayers() if isinstance(layer, paddle.nn.Linear)}


def _canonical_name(name):
    layer, field = name.rsplit(".", 1)
    return f"{layer}.{_STAT_NAMES.get(field, field)}"


def export_weights(model):
    linear = _linear_weights(model)
    out = {}
    for name, t in model.state_dict().items():
        value = t.numpy().copy()
        out[_canonical_name(name)] = np.ascontiguousarray(value.T) if name in linear else value
    return out


def import_weights(model, weights):
    """Copy canonical weights into the model; names and shapes must match exactly."""
    state = model.state_dict()
    linear = _linear_weights(model)
    expected = {_canonical_name(n): n for n in state}
    if set(weights) != set(expected):
        missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
        raise ValueError(f"weights do not match the model: missing {missing}, unexpected {extra}")
    for canonical, name in expected.items():
        value = np.asarray(weights[canonical])
        if name in linear:
            value = value.T
        if tuple(value.shape) != tuple(state[name].shape):
            raise ValueError(f"{canonical}: shape {value.shape} != model {tuple(state[name].shape)}")
        state[name].set_value(np.asarray(value, order="C"))


def save_checkpoint(model, path):
    paddle.save(model.state_dict(), str(path))


def load_checkpoint(model, path):
    """Load a .pdparams through the restricted unpickler (paddle.load would unpickle anything)."""
    state = safepickle.load(path)
    if not isinstance(state, dict):
        raise DataError(path, "not a paddle state_dict")
    state = {k: v for k, v in state.items() if k != "StructuredToParameterName@@"}
    missing, unexpected = model.set_state_dict(state)
    if missing or unexpected:
        raise DataError(path, f"not a checkpoint of this task's model (missing {missing}, unexpected {unexpected})")


def read_state_file(path):
    """{name: numpy} from a .pdparams state_dict, through the restricted unpickler (paddle.load
    would unpickle anything)."""
    state = safepickle.load(path)
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)} if isinstance(state, dict) else {}
    if not arrays:
        raise DataError(path, "holds no arrays (expected a paddle state_dict: name -> tensor)")
    return {k: v.copy() for k, v in arrays.items()}


def write_state_file(arrays, path):
    """Save {name: numpy} as a .pdparams state_dict, atomically (a temporary file renamed into place)."""
    from dualbench.common.fsutil import atomic_path
    with atomic_path(path, suffix=Path(path).suffix) as tmp:
        paddle.save({k: paddle.to_tensor(np.asarray(v, order="C")) for k, v in arrays.items()}, str(tmp))
