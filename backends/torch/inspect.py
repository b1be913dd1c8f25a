"""Looking inside a torch model for `dualbench parity`: modules, calls, tensors, gradients, dropout masks.

Everything comes back as numpy under torch's own names and in torch's own layout; the parity
engine maps names and layouts between the frameworks (dualbench.parity.mapping). Modules are
addressed by their qualified names (`layer1.0.conv1`), as `named_modules()` gives them.
"""
import copy

import numpy as np
import torch
from torch import nn

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_CHANNEL_DROPOUT = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def framework_version():
    return torch.__version__


def is_model(obj):
    return isinstance(obj, nn.Module)


def copy_model(model):
    return copy.deepcopy(model)


def to_tensor(array):
    """numpy -> torch tensor (copied, dtype kept: float32 stays float32, int64 stays int64)."""
    return torch.from_numpy(np.array(array, copy=True))


def to_numpy(tensor):
    return tensor.detach().cpu().numpy().copy()


def tensors_of(value):
    """The tensors in a module's output (a tensor, or nested tuples/lists/dicts of them), as numpy."""
    if isinstance(value, torch.Tensor):
        return [to_numpy(value)]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in tensors_of(v)]
    return []


def set_mode(model, train):
    model.train(train)


def cast_model(model, dtype):
    """'float32' | 'float64': parameters and BatchNorm running statistics alike."""
    model.to(getattr(torch, dtype))


def _modules(model):
    return dict(model.named_modules())


def module_table(model):
    """{qualified name: {"type", "tensors": {local name: shape}, "config"}} of every module that is a
    leaf or holds tensors itself (parameters and buffers it registers directly)."""
    table = {}
    for name, module in model.named_modules():
        own = {**dict(module.named_parameters(recurse=False)), **dict(module.named_buffers(recurse=False))}
        if next(module.children(), None) is not None and not own:
            continue   # a container: its children are the modules (the model itself is named "")
        table[name] = {"type": type(module).__name__,
                       "bases": [c.__name__ for c in type(module).__mro__[1:] if issubclass(c, nn.Module) and c is not nn.Module],
                       "tensors": {k: tuple(v.shape) for k, v in own.items() if v is not None},
                       "config": module_config(module)}
    return table


def _pair(value, n=2):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def module_config(module):
    """The settings of a layer that change what it computes, in framework-neutral words (the same
    keys as the paddle backend's): what the parity diagnosis replays with a convention flipped."""
    config = {}
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        # torch's momentum is the weight of the new batch; train mode normalises with batch statistics
        config.update(eps=module.eps, new_batch_weight=module.momentum, use_global_stats=False)
    elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
        config.update(eps=module.eps, groups=getattr(module, "num_groups", None))
    elif isinstance(module, _DROPOUT):
        config.update(p=module.p, upscale_in_train=True, channelwise=isinstance(module, _CHANNEL_DROPOUT))
    elif isinstance(module, nn.Conv2d):
        padding = module.padding if isinstance(module.padding, str) else _pair(module.padding)
        config.update(kernel=_pair(module.kernel_size), stride=_pair(module.stride), padding=padding,
                      dilation=_pair(module.dilation), groups=module.groups, padding_mode=module.padding_mode)
    elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        config.update(kernel=_pair(module.kernel_size), stride=_pair(module.stride or module.kernel_size),
                      padding=_pair(module.padding), ceil_mode=bool(module.ceil_mode))
        if isinstance(module, nn.AvgPool2d):
            config["include_pad"] = bool(module.count_include_pad)
    elif isinstance(module, nn.Upsample):
        config.update(mode=module.mode, size=module.size, scale=module.scale_factor,
                      coordinate="align_corners" if module.align_corners else
                      ("half_pixel" if module.mode in ("bilinear", "linear", "bicubic", "trilinear") else "asymmetric"))
    elif isinstance(module, nn.GELU):
        config["approximate"] = module.approximate
    elif isinstance(module, (nn.Hardsigmoid, nn.Hardswish)):
        config.update(slope=1 / 6, offset=0.5)
    elif isinstance(module, nn.LeakyReLU):
        config["negative_slope"] = module.negative_slope
    elif isinstance(module, nn.ELU):
        config["alpha"] = module.alpha
    elif isinstance(module, (nn.Softmax, nn.LogSoftmax)):
        config["axis"] = module.dim
    return config


def state_arrays(model, names=None):
    """The state_dict's tensors (or only those named), under their own names and in their own layout."""
    state = model.state_dict()
    return {name: to_numpy(state[name]) for name in (state if names is None else names)}


def load_state_arrays(model, arrays):
    """Copy numpy arrays into the named state tensors (same shapes; other tensors are left alone)."""
    state = model.state_dict()
    with torch.no_grad():
        for name, value in arrays.items():
            if name not in state:
                raise ValueError(f"the torch model has no tensor {name}")
            value = np.asarray(value)
            if tuple(value.shape) != tuple(state[name].shape):
                raise ValueError(f"{name}: shape {list(value.shape)} != torch model {list(state[name].shape)}")
            state[name].copy_(torch.from_numpy(np.asarray(value, order="C")))   # keeps 0-d as 0-d


def watch_modules(model, callback, names=None):
    """Call callback(name, inputs, outputs) after every call of the named modules (all modules of
    module_table when names is None), inputs and outputs as lists of numpy arrays. Inputs are read
    before the module runs, so an in-place module (ReLU(inplace=True)) shows its real input.
    Returns a function that removes the hooks.
    """
    modules = _modules(model)
    names = list(module_table(model)) if names is None else [n for n in names if n in modules]
    handles = []
    for name in names:
        pending = []
        handles.append(modules[name].register_forward_pre_hook(
            lambda module, inputs, pending=pending: pending.append(tensors_of(inputs))))
        handles.append(modules[name].register_forward_hook(
            lambda module, inputs, output, name=name, pending=pending:
            callback(name, pending.pop() if pending else tensors_of(inputs), tensors_of(output))))
    return lambda: [h.remove() for h in handles]


def inject_dropout_masks(model, mask_for, keys=None):
    """Replace the random mask of dropout modules with mask_for(key, input_shape, p, channelwise).

    keys: {module name: key} (default: every dropout module, keyed by its own name), so that the
    two frameworks' modules draw the same mask. mask_for returns a 0/1 keep-mask (shape [N,C,1,..]
    for channel-wise dropout); the module's own scaling rule applies (torch: kept values x 1/(1-p)).
    Only train mode is touched. Returns a function that removes the hooks.
    """
    modules = _modules(model)
    keys = {n: n for n, m in modules.items() if isinstance(m, _DROPOUT)} if keys is None else keys

    def hook_for(key, channelwise):
        def hook(module, inputs, output):
            if not module.training or module.p == 0:
                return None
            mask = np.asarray(mask_for(key, tuple(inputs[0].shape), module.p, channelwise))
            return inputs[0] * (torch.from_numpy(mask).to(inputs[0].dtype) / (1.0 - module.p))
        return hook

    hooked = [name for name in keys if isinstance(modules.get(name), _DROPOUT)]
    # an in-place dropout (Dropout(inplace=True)) would overwrite the input the mask is applied to
    inplace = {name: modules[name].inplace for name in hooked}
    for name in hooked:
        modules[name].inplace = False
    handles = [modules[name].register_forward_hook(hook_for(keys[name], isinstance(modules[name], _CHANNEL_DROPOUT)))
               for name in hooked]

    def remove():
        for handle in handles:
            handle.remove()
        for name, value in inplace.items():
            modules[name].inplace = value
    return remove


def forward(model, inputs, train):
    """Run the model on numpy inputs (one array, or a list for several positional inputs)."""
    set_mode(model, train)
    args = [to_tensor(a) for a in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
    with torch.no_grad():
        return model(*args)


def record_calls(model, inputs, train, names=None):
    """One forward pass that records every call of the modules (see watch_modules).

    Returns (calls, outputs, error): calls in execution order as dicts {module, call (1-based per
    module), inputs, outputs}; the model's output tensors (numpy list) or None; the error message
    when a module raised (the calls up to it are kept).
    """
    calls, counts = [], {}

    def record(name, ins, outs):
        counts[name] = counts.get(name, 0) + 1
        calls.append({"module": name, "call": counts[name], "inputs": ins, "outputs": outs})

    remove = watch_modules(model, record, names)
    try:
        return calls, tensors_of(forward(model, inputs, train)), None
    except (RuntimeError, ValueError, AssertionError, TypeError, IndexError) as e:
        return calls, None, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    finally:
        remove()


def call_module(model, name, inputs, train):
    """Run one module alone on numpy inputs (as captured from a call); returns its outputs (numpy)."""
    module = _modules(model)[name]
    module.train(train)
    with torch.no_grad():
        return tensors_of(module(*[to_tensor(a) for a in inputs]))


def trainable_names(model):
    """Native names of the parameters an optimizer updates."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def gradients(model, names=None):
    """Native name -> gradient of every trainable parameter (or of those named; zeros where none was
    computed)."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    return {name: (to_numpy(params[name].grad) if params[name].grad is not None else
                   np.zeros(tuple(params[name].shape), np.float32)) for name in (params if names is None else names)}


def loss_and_gradients(state, x, y):
    """Forward in the current mode, data loss + regularisers, backward; no optimizer step. The
    gradients stay in the model (read them with gradients()).

    Returns {"loss", "objective", "output"}; raises what the framework raises (e.g. a
    cross-entropy label of the wrong shape or dtype).
    """
    from dualbench.backends.torch.train import primary_output, regularisation
    for p in state.model.parameters():
        p.grad = None
    out = state.model(x)
    loss = state.loss_fn(out, y)
    reg = regularisation(state.task, state.model)
    objective = loss if reg is None else loss + reg
    objective.backward()
    return {"loss": float(loss.detach()), "objective": float(objective.detach()),
            "output": to_numpy(primary_output(out))}
