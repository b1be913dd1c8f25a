"""Looking inside a paddle model for `dualbench parity`: modules, calls, tensors, gradients, dropout masks.

Everything comes back as numpy under paddle's own names and in paddle's own layout (Linear
weights [in, out], BatchNorm statistics `_mean` / `_variance`); the parity engine maps names and
layouts between the frameworks (dualbench.parity.mapping). Modules are addressed by their
qualified names (`layer1.0.conv1`), as `named_sublayers()` gives them.
"""
import copy

import numpy as np
import paddle
from paddle import nn

_DROPOUT = (nn.Dropout, nn.Dropout2D, nn.Dropout3D)
_CHANNEL_DROPOUT = (nn.Dropout2D, nn.Dropout3D)


def framework_version():
    return paddle.__version__


def is_model(obj):
    return isinstance(obj, nn.Layer)


def copy_model(model):
    return copy.deepcopy(model)


def to_tensor(array):
    """numpy -> paddle tensor (paddle.to_tensor copies; dtype kept)."""
    return paddle.to_tensor(np.asarray(array))


def to_numpy(tensor):
    return tensor.detach().numpy().copy()


def tensors_of(value):
    """The tensors in a layer's output (a tensor, or nested tuples/lists/dicts of them), as numpy."""
    if isinstance(value, paddle.Tensor):
        return [to_numpy(value)]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in tensors_of(v)]
    return []


def set_mode(model, train):
    model.train() if train else model.eval()


def cast_model(model, dtype):
    """'float32' | 'float64': parameters and BatchNorm running statistics alike."""
    model.to(dtype=dtype)


def _modules(model):
    return dict(model.named_sublayers(include_self=True))


def module_table(model):
    """{qualified name: {"type", "tensors": {local name: shape}, "config"}} of every layer that is a
    leaf or holds tensors itself (parameters and buffers it creates directly)."""
    table = {}
    for name, layer in model.named_sublayers(include_self=True):
        own = {**dict(layer.named_parameters(include_sublayers=False)),
               **dict(layer.named_buffers(include_sublayers=False))}
        if next(iter(layer.children()), None) is not None and not own:
            continue   # a container: its children are the modules (the model itself is named "")
        table[name] = {"type": type(layer).__name__,
                       "bases": [c.__name__ for c in type(layer).__mro__[1:] if issubclass(c, nn.Layer) and c is not nn.Layer],
                       "tensors": {k: tuple(v.shape) for k, v in own.items() if v is not None},
                       "config": module_config(layer)}
    return table


def _pair(value, n=2):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def module_config(module):
    """The settings of a layer that change what it computes, in framework-neutral words (the same
    keys as the torch backend's): what the parity diagnosis replays with a convention flipped."""
    config = {}
    if isinstance(module, nn.layer.norm._BatchNormBase) or type(module).__name__ == "BatchNorm":
        # paddle's momentum is the weight kept on the old running value
        config.update(eps=float(module._epsilon), new_batch_weight=1.0 - float(module._momentum),
                      use_global_stats=bool(getattr(module, "_use_global_stats", False)))
        fused = getattr(module, "_act", None)
        if fused:
            config["fused_activation"] = str(fused)
    elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
        config.update(eps=float(module._epsilon), groups=getattr(module, "_num_groups", None))
    elif isinstance(module, _DROPOUT):
        config.update(p=float(module.p), channelwise=isinstance(module, _CHANNEL_DROPOUT),
                      upscale_in_train=getattr(module, "mode", "upscale_in_train") == "upscale_in_train")
    elif isinstance(module, nn.Conv2D):
        padding = module._padding if isinstance(module._padding, str) else _pair(module._padding)
        config.update(kernel=_pair(module._kernel_size), stride=_pair(module._stride), padding=padding,
                      dilation=_pair(module._dilation), groups=module._groups, padding_mode=module._padding_mode)
    elif isinstance(module, (nn.MaxPool2D, nn.AvgPool2D)):
        config.update(kernel=_pair(module.ksize), stride=_pair(module.stride or module.ksize),
                      padding=_pair(module.padding), ceil_mode=bool(module.ceil_mode))
        if isinstance(module, nn.AvgPool2D):
            config["include_pad"] = not module.exclusive
    elif isinstance(module, nn.Upsample):
        linear = module.mode in ("bilinear", "linear", "bicubic", "trilinear")
        config.update(mode=module.mode, size=module.size, scale=module.scale_factor,
                      coordinate="align_corners" if module.align_corners else
                      ("half_pixel" if linear and module.align_mode == 0 else "asymmetric"))
    elif isinstance(module, nn.GELU):
        approximate = module._approximate
        config["approximate"] = "tanh" if approximate in (True, "tanh") else "none"
    elif isinstance(module, (nn.Hardsigmoid, nn.Hardswish)):
        config.update(slope=1 / 6, offset=0.5)
    elif isinstance(module, nn.LeakyReLU):
        config["negative_slope"] = float(module._negative_slope)
    elif isinstance(module, nn.ELU):
        config["alpha"] = float(module._alpha)
    elif isinstance(module, (nn.Softmax, nn.LogSoftmax)):
        config["axis"] = module._axis
    return config


def state_arrays(model, names=None):
    """The state_dict's tensors (or only those named), under their own names and in their own layout."""
    state = model.state_dict()
    return {name: to_numpy(state[name]) for name in (state if names is None else names)}


def load_state_arrays(model, arrays):
    """Copy numpy arrays into the named state tensors (same shapes; other tensors are left alone)."""
    state = model.state_dict()
    for name, value in arrays.items():
        if name not in state:
            raise ValueError(f"the paddle model has no tensor {name}")
        value = np.asarray(value)
        if tuple(value.shape) != tuple(state[name].shape):
            raise ValueError(f"{name}: shape {list(value.shape)} != paddle model {list(state[name].shape)}")
        state[name].set_value(np.asarray(value, order="C"))


def watch_modules(model, callback, names=None):
    """Call callback(name, inputs, outputs) after every call of the named layers (all layers of
    module_table when names is None), inputs and outputs as lists of numpy arrays. Inputs are read
    before the layer runs, so an in-place layer shows its real input.
    Returns a function that removes the hooks.
    """
    modules = _modules(model)
    names = list(module_table(model)) if names is None else [n for n in names if n in modules]
    handles = []
    for name in names:
        pending = []
        handles.append(modules[name].register_forward_pre_hook(
            lambda layer, inputs, pending=pending: pending.append(tensors_of(inputs))))
        handles.append(modules[name].register_forward_post_hook(
            lambda layer, inputs, output, name=name, pending=pending:
            callback(name, pending.pop() if pending else tensors_of(inputs), tensors_of(output))))
    return lambda: [h.remove() for h in handles]


def inject_dropout_masks(model, mask_for, keys=None):
    """Replace the random mask of dropout layers with mask_for(key, input_shape, p, channelwise).

    keys: {layer name: key} (default: every dropout layer, keyed by its own name), so that the
    two frameworks' layers draw the same mask. mask_for returns a 0/1 keep-mask (shape [N,C,1,..]
    for channel-wise dropout); the layer's own scaling rule applies (mode 'upscale_in_train': kept
    values x 1/(1-p); 'downscale_in_infer': unscaled in train, x (1-p) in eval).
    Only train mode is touched. Returns a function that removes the hooks.
    """
    modules = _modules(model)
    keys = {n: n for n, m in modules.items() if isinstance(m, _DROPOUT)} if keys is None else keys

    def hook_for(key, channelwise):
        def hook(layer, inputs, output):
            if not layer.training or layer.p == 0:
                return None
            mask = np.asarray(mask_for(key, tuple(inputs[0].shape), layer.p, channelwise))
            upscale = getattr(layer, "mode", "upscale_in_train") == "upscale_in_train"
            scale = 1.0 / (1.0 - layer.p) if upscale else 1.0
            return inputs[0] * (paddle.to_tensor(mask).astype(inputs[0].dtype) * scale)
        return hook

    hooked = [name for name in keys if isinstance(modules.get(name), _DROPOUT)]
    # an in-place dropout (Dropout(inplace=True)) would overwrite the input the mask is applied to
    inplace = {name: getattr(modules[name], "inplace", False) for name in hooked}
    for name in hooked:
        modules[name].inplace = False
    handles = [modules[name].register_forward_post_hook(hook_for(keys[name], isinstance(modules[name], _CHANNEL_DROPOUT)))
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
    with paddle.no_grad():
        return model(*args)


def record_calls(model, inputs, train, names=None):
    """One forward pass that records every call of the layers (see watch_modules).

    Returns (calls, outputs, error): calls in execution order as dicts {module, call (1-based per
    layer), inputs, outputs}; the model's output tensors (numpy list) or None; the error message
    when a layer raised (the calls up to it are kept).
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
    """Run one layer alone on numpy inputs (as captured from a call); returns its outputs (numpy)."""
    layer = _modules(model)[name]
    set_mode(layer, train)
    with paddle.no_grad():
        return tensors_of(layer(*[to_tensor(a) for a in inputs]))


def trainable_names(model):
    """Native names of the parameters an optimizer updates."""
    return [name for name, p in model.named_parameters() if not p.stop_gradient]


def gradients(model, names=None):
    """Native name -> gradient of every trainable parameter (or of those named; zeros where none was
    computed)."""
    # BatchNorm's _mean/_variance are listed as parameters in paddle, with stop_gradient set
    params = {name: p for name, p in model.named_parameters() if not p.stop_gradient}
    return {name: (to_numpy(params[name].grad) if params[name].grad is not None else
                   np.zeros(tuple(params[name].shape), np.float32)) for name in (params if names is None else names)}


def loss_and_gradients(state, x, y):
    """Forward in the current mode, data loss + regularisers, backward; no optimizer step. The
    gradients stay in the model (read them with gradients()).

    Returns {"loss", "objective", "output"}; raises what the framework raises (e.g. a
    cross-entropy label of the wrong shape or dtype).
    """
    from dualbench.backends.paddle.train import primary_output, regularisation
    state.model.clear_gradients(set_to_zero=False)
    out = state.model(x)
    loss = state.loss_fn(out, y)
    reg = regularisation(state.task, state.model)
    objective = loss if reg is None else loss + reg
    objective.backward()
    return {"loss": float(loss.detach()), "objective": float(objective.detach()),
            "output": to_numpy(primary_output(out))}
