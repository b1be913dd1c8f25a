"""Identical initial weights for both backends (`--init shared`), drawn in numpy.

The distributions follow the task's spec: torch's defaults (W and b ~ U(+-1/sqrt(fan_in))) for
"framework" specs, N(0, sqrt(2/fan_in)) weights with zero biases for "kaiming_normal" specs.
BatchNorm starts at gamma 1, beta 0, running mean 0, running var 1 in both frameworks.
"""
import numpy as np

from dualbench.common.tasks import buffer_shapes, parameter_shapes


def shared_weights(model, seed):
    """Canonical weights: name -> float32 array in torch orientation (Linear weight [out, in])."""
    rng = np.random.default_rng([seed, 7919])
    bn_names = {layer.name for layer in model.layers if layer.kind == "bn2d"}
    weights = {}
    for name, shape in parameter_shapes(model).items():
        layer, kind = name.rsplit(".", 1)
        if layer in bn_names:
            weights[name] = np.full(shape, 1.0 if kind == "weight" else 0.0, np.float32)
            continue
        fan_in = int(np.prod(shape[1:])) if kind == "weight" else None
        if kind == "bias":
            w_shape = parameter_shapes(model)[f"{layer}.weight"]
            fan_in = int(np.prod(w_shape[1:]))
        if model.init == "kaiming_normal":
            weights[name] = (rng.normal(0.0, np.sqrt(2.0 / fan_in), shape) if kind == "weight"
                             else np.zeros(shape))
        else:
            bound = 1.0 / np.sqrt(fan_in)
            weights[name] = rng.uniform(-bound, bound, shape)
        weights[name] = weights[name].astype(np.float32)
    for name, shape in buffer_shapes(model).items():
        weights[name] = np.full(shape, 1.0 if name.endswith("running_var") else 0.0, np.float32)
    return weights
