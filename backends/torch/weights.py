"""Canonical weights (name -> numpy, torch orientation, BN statistics included) and .pt checkpoints.

torch's state_dict already is the canonical layout; only `num_batches_tracked` is left out.
"""
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
            state[name].copy_(torch.from_numpy(np.ascontiguousarray(value)))


def save_checkpoint(model, path):
    torch.save(model.state_dict(), path)


def load_checkpoint(model, path):
    """Load a .pt state_dict with weights_only=True (no arbitrary unpickling)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (OSError, RuntimeError, KeyError, ValueError, EOFError) as e:
        raise DataError(path, f"not a checkpoint of this task's model ({str(e).splitlines()[0]})") from None
