"""Looking inside a torch model for `dualbench parity`: per-layer outputs, gradients, dropout masks.

Everything comes back as numpy in the canonical layout (torch orientation), so the parity engine
compares the two frameworks without knowing either. Hooks are registered on the top-level named
layers of the spec's Sequential, so names match the spec and the paddle side.
"""
import numpy as np
import torch
from torch import nn

_DROPOUT = (nn.Dropout, nn.Dropout2d)


def framework_version():
    return torch.__version__


def to_tensor(array):
    """numpy -> torch tensor (copied, dtype kept: float32 stays float32, int64 stays int64)."""
    return torch.from_numpy(np.array(array, copy=True))


def to_numpy(tensor):
    return tensor.detach().cpu().numpy().copy()


def set_mode(model, train):
    model.train(train)


def cast_model(model, dtype):
    """'float32' | 'float64': parameters and BatchNorm running statistics alike."""
    model.to(getattr(torch, dtype))


def watch_layers(model, callback, names=None):
    """Call callback(name, input_numpy, output_numpy) after the forward of every named layer
    (or only of those in `names`). Returns a function that removes the hooks.
    """
    def hook_for(name):
        def hook(module, inputs, output):
            callback(name, to_numpy(inputs[0]), to_numpy(output))
        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in model.named_children()
               if names is None or name in names]
    return lambda: [h.remove() for h in handles]


def inject_dropout_masks(model, mask_for):
    """Replace every dropout layer's random mask with mask_for(name, input_shape, p, channelwise).

    mask_for returns a numpy array already scaled by 1/(1-p) (shape [N,C,1,1] for channel-wise
    dropout) or None to keep the framework's own mask. Only train mode is touched.
    """
    def hook_for(name, channelwise):
        def hook(module, inputs, output):
            if not module.training:
                return None
            mask = mask_for(name, tuple(inputs[0].shape), module.p, channelwise)
            if mask is None:
                return None
            return inputs[0] * torch.from_numpy(np.asarray(mask)).to(inputs[0].dtype)
        return hook

    handles = [module.register_forward_hook(hook_for(name, isinstance(module, nn.Dropout2d)))
               for name, module in model.named_children() if isinstance(module, _DROPOUT)]
    return lambda: [h.remove() for h in handles]


def layer_outputs(model, x, train):
    """Run one forward pass; returns ({layer name: output}, final output tensor or None, error or None).

    A layer that raises (e.g. a shape mismatch after a pooling difference) stops the pass; the
    outputs recorded up to that layer are still returned, with the error message.
    """
    outputs = {}
    remove = watch_layers(model, lambda name, _inp, out: outputs.__setitem__(name, out))
    set_mode(model, train)
    try:
        out = model(x)
        return outputs, out, None
    except (RuntimeError, ValueError, AssertionError) as e:
        return outputs, None, f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
    finally:
        remove()


def gradients(model):
    """Canonical name -> gradient of every trainable parameter (zeros where none was computed)."""
    return {name: (to_numpy(p.grad) if p.grad is not None else np.zeros(tuple(p.shape), np.float32))
            for name, p in model.named_parameters() if p.requires_grad}


def loss_and_gradients(state, x, y):
    """Forward in the current mode, data loss + regularisers, backward; no optimizer step.

    Returns {"loss", "objective", "output", "grads"}; raises what the framework raises (e.g. a
    cross-entropy label of the wrong shape or dtype).
    """
    from dualbench.backends.torch.train import regularisation
    for p in state.model.parameters():
        p.grad = None
    out = state.model(x)
    loss = state.loss_fn(out, y)
    reg = regularisation(state.task, state.model)
    objective = loss if reg is None else loss + reg
    objective.backward()
    return {"loss": float(loss.detach()), "objective": float(objective.detach()),
            "output": to_numpy(out), "grads": gradients(state.model)}
