"""Canonical weights (name -> numpy, torch orientation, BN statistics included) and .pt checkpoints.

torch's state_dict already is the canonical layout; only `num_batches_tracked` is left out.
"""
from pathlib import Path

import numpy as np
import torch

from dualbench.common.errors import DataError


def export_weights(model):
    return {name: t.detach().cpu().numpy().copy() for name, t in model.state_dict().items()
            if not name.endswith("num_batches_tracked")}


def import_weights(model, weights):
    """Copy canonical weights into the model; names and shapes must match exactly."""
    state = model.state_dict()
    expected = {n for n in state if not n.endswith("num_batches_tracked")}
    if set(weights) != expected:
        missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise ValueError(f"weights do not match the model: missing {missing}, unexpected {extra}")
    with torch.no_grad():
        for name in expected:
            value = np.asarray(weights[name])
            if tuple(value.shape) != tuple(state[name].shape):
                raise ValueError(f"{name}: shape {value.shape} != model {tuple(state[name].shape)}")
            state[name].copy_(torch.from_numpy(np.asarray(value, order="C")))   # keeps 0-d as 0-d


def save_checkpoint(model, path):
    torch.save(model.state_dict(), path)


def load_checkpoint(model, path):
    """Load a .pt state_dict with weights_only=True (no arbitrary unpickling)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (OSError, RuntimeError, KeyError, ValueError, EOFError) as e:
        raise DataError(path, f"not a checkpoint of this task's model ({str(e).splitlines()[0]})") from None


def read_state_file(path):
    """{name: numpy} from a .pt/.pth state_dict (weights_only: tensors and containers, nothing else).
    A checkpoint that nests its state_dict under 'state_dict' or 'model' is read from there."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except Exception as e:  # noqa: BLE001 - a corrupt or hostile file raises many kinds of errors
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DataError(path, f"not a torch state_dict, or one holding more than tensors ({first})") from None
    if isinstance(state, dict):
        nested = [state[k] for k in ("state_dict", "model") if isinstance(state.get(k), dict)]
        state = nested[0] if nested else state
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)} if isinstance(state, dict) else {}
    if not tensors:
        raise DataError(path, "holds no tensors (expected a state_dict: name -> tensor)")
    return {k: v.detach().cpu().numpy().copy() for k, v in tensors.items()}


def write_state_file(arrays, path):
    """Save {name: numpy} as a .pt state_dict, atomically (a temporary file renamed into place)."""
    from dualbench.common.fsutil import atomic_path
    with atomic_path(path, suffix=Path(path).suffix) as tmp:
        torch.save({k: torch.from_numpy(np.asarray(v, order="C")) for k, v in arrays.items()}, str(tmp))
