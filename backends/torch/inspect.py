"""Looking inside a torch model for `dualbench parity`: modules, calls, tensors, gradients, dropout masks.

Everything comes back as numpy under torch's own names and in torch's own layout; the parity
engine maps names and layouts between the frameworks (dualbench.parity.mapping). Modules are
addressed by their qualified names (`layer1.0.conv1`), as `named_modules()` gives them.
"""
import contextlib
import copy

import numpy as np
import torch
from torch import nn

from dualbench.common.nested import capture_call, fill_layout, map_leaves, nested_leaves

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


def _is_tensor(value):
    return isinstance(value, torch.Tensor)


def tensors_of(value):
    """The tensors in a module's output (a tensor, or nested tuples/lists/dicts of them), as numpy."""
    return [to_numpy(t) for _, t in nested_leaves(value, _is_tensor)]


def set_mode(model, train):
    model.train(train)


def cast_model(model, dtype):
    """'float32' | 'float64': parameters and BatchNorm running statistics alike."""
    model.to(getattr(torch, dtype))


def _modules(model):
    return dict(model.named_modules())


# Modules compared as one unit: their submodules' tensors are theirs, their submodules are not hooked.
# MultiheadAttention computes with its out_proj's weight but never calls that module; an RNN keeps all
# its layers' weights itself.
UNIT_TYPES = (nn.MultiheadAttention, nn.RNNBase)
# Containers whose calls are recorded (and compared) as well as their submodules': what they compute
# around their submodules (norm_first, the activation between the feed-forward layers) is not a module.
COMPOSITE_TYPES = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.TransformerEncoder,
                   nn.TransformerDecoder, nn.Transformer)


def module_table(model):
    """{qualified name: {"type", "bases", "tensors": {local name: shape}, "config", "unit", "composite"}}
    of every module that is a leaf, holds tensors itself, is a unit (UNIT_TYPES, with its submodules'
    tensors under dotted local names) or a composite (COMPOSITE_TYPES). A tensor held by two modules
    (tied weights) is listed once, by the first; buffers that are not saved with the model are left out."""
    table, seen, folded = {}, set(), []
    state = set(model.state_dict())   # non-persistent buffers (paddle's RNN _dropout_state) are not the model's
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in folded):
            continue
        unit = isinstance(module, UNIT_TYPES)
        if unit:
            folded.append(f"{name}." if name else "")
            found = {**dict(module.named_parameters()), **dict(module.named_buffers())}
        else:
            found = {**dict(module.named_parameters(recurse=False)), **dict(module.named_buffers(recurse=False))}
        own = {}
        for key, value in found.items():
            if value is not None and id(value) not in seen and f"{name}.{key}".lstrip(".") in state:
                seen.add(id(value))
                own[key] = tuple(value.shape)
        composite = isinstance(module, COMPOSITE_TYPES)
        if next(module.children(), None) is not None and not own and not unit and not composite:
            continue   # a container: its children are the modules (the model itself is named "")
        table[name] = {"type": type(module).__name__,
                       "bases": [c.__name__ for c in type(module).__mro__[1:] if issubclass(c, nn.Module) and c is not nn.Module],
                       "tensors": own, "config": module_config(module), "unit": unit, "composite": composite}
    return table


def state_shapes(model):
    """{state name: shape} without copying a tensor."""
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}


def _pair(value, n=2):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def _activation_name(fn):
    """'relu' | 'gelu' | 'gelu_tanh' for a Transformer layer's activation: F.relu, F.gelu, nn.ReLU, nn.GELU
    or a functools.partial of F.gelu; any other callable by its name."""
    functional = torch.nn.functional
    keywords = getattr(fn, "keywords", None) or {}
    fn = getattr(fn, "func", fn)
    if fn is functional.relu or isinstance(fn, nn.ReLU):
        return "relu"
    if isinstance(fn, nn.GELU):
        return "gelu_tanh" if fn.approximate == "tanh" else "gelu"
    if fn is functional.gelu:
        return "gelu_tanh" if keywords.get("approximate") == "tanh" else "gelu"
    return getattr(fn, "__name__", type(fn).__name__)


def _sequence_config(module):
    """Settings of the recurrent, attention, Embedding, InstanceNorm and Transformer layers, replayed by
    dualbench.parity.conventions.sequence (the same keys as the paddle backend's); None for other modules.
    torch: batch_first=False by default, a boolean attention mask's True blocks (mask_blocks), Embedding
    returns the padding row, InstanceNorm has no affine and no running statistics by default."""
    if isinstance(module, nn.RNNBase):
        mode = {"LSTM": "lstm", "GRU": "gru"}.get(module.mode, "rnn")
        config = dict(mode=mode, hidden_size=module.hidden_size, num_layers=module.num_layers,
                      bidirectional=bool(module.bidirectional), batch_first=bool(module.batch_first),
                      proj_size=module.proj_size, dropout=float(module.dropout), bias=bool(module.bias))
        extra = {"lstm": {}, "gru": {"reset_after": True},
                 "rnn": {"nonlinearity": getattr(module, "nonlinearity", "tanh")}}
        return {**config, **extra[mode]}
    if isinstance(module, nn.MultiheadAttention):
        return dict(embed_dim=module.embed_dim, num_heads=module.num_heads, kdim=module.kdim, vdim=module.vdim,
                    bias=module.in_proj_bias is not None, batch_first=bool(module.batch_first),
                    dropout=float(module.dropout), add_bias_kv=module.bias_k is not None,
                    add_zero_attn=bool(module.add_zero_attn), mask_blocks=True, scaling="head_dim",
                    need_weights=None)   # torch decides need_weights per call
    if isinstance(module, nn.Embedding):
        return dict(padding_idx=module.padding_idx, zero_padding_output=False, max_norm=module.max_norm,
                    norm_type=float(module.norm_type))
    if isinstance(module, nn.modules.instancenorm._InstanceNorm):
        return dict(eps=module.eps, affine=bool(module.affine), track_running_stats=bool(module.track_running_stats),
                    new_batch_weight=module.momentum)
    if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        attention = module.self_attn
        return dict(d_model=attention.embed_dim, nhead=attention.num_heads,
                    dim_feedforward=module.linear1.out_features, norm_first=bool(module.norm_first),
                    activation=_activation_name(module.activation), layer_norm_eps=float(module.norm1.eps),
                    batch_first=bool(attention.batch_first), dropout=float(module.dropout1.p),
                    attn_dropout=float(attention.dropout), act_dropout=float(module.dropout.p),
                    bias=module.linear1.bias is not None, mask_blocks=True, scaling="head_dim")
    return None


def module_config(module):
    """The settings of a layer that change what it computes, in framework-neutral words (the same
    keys as the paddle backend's): what the parity diagnosis replays with a convention flipped."""
    sequence = _sequence_config(module)
    if sequence is not None:
        return sequence
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


def _capture(args, kwargs):
    """(positional tensors as a flat numpy list, where each sat in the arguments, keyword arguments)."""
    return capture_call(args, kwargs, _is_tensor, to_numpy)


def _to_tensors(value):
    """numpy arrays as tensors, inside tuples, lists and dicts too; other values as they are."""
    return map_leaves(value, lambda v: isinstance(v, np.ndarray), to_tensor)


def watch_modules(model, callback, names=None):
    """Call callback(name, inputs, outputs, kwargs, layout) after every call of the named modules (all modules of
    module_table when names is None): inputs (positional) and outputs as lists of numpy arrays, kwargs
    {name: numpy arrays (nested as passed) or flag}, layout: where each input sat in the positional
    arguments (see call_module). Inputs are read before the module runs, so an in-place module
    (ReLU(inplace=True)) shows its real input. Returns a function that removes the hooks.
    """
    modules = _modules(model)
    names = list(module_table(model)) if names is None else [n for n in names if n in modules]
    handles = []
    for name in names:
        pending = []

        def before(module, args, kwargs, pending=pending):
            pending.append(_capture(args, kwargs))

        def after(module, args, kwargs, output, name=name, pending=pending):
            ins, layout, keywords = pending.pop() if pending else _capture(args, kwargs)
            callback(name, ins, tensors_of(output), keywords, layout)
        handles.append(modules[name].register_forward_pre_hook(before, with_kwargs=True))
        handles.append(modules[name].register_forward_hook(after, with_kwargs=True))
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


def model_call(inputs):
    """(args, kwargs) as tensors from numpy inputs: one array, a list of positional arrays, or
    {"args": [...], "kwargs": {name: array}} (inputs bound to forward()'s parameter names)."""
    if isinstance(inputs, dict):
        return ([to_tensor(a) for a in inputs.get("args", [])],
                _to_tensors(inputs.get("kwargs", {})))
    return [to_tensor(a) for a in (inputs if isinstance(inputs, (list, tuple)) else [inputs])], {}


@contextlib.contextmanager
def no_fastpath():
    """torch's eval fast path for MultiheadAttention and the Transformer layers computes them in one fused
    call that skips their submodules' hooks (and pads with nested tensors): off while parity looks inside."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def forward(model, inputs, train):
    """Run the model on numpy inputs (see model_call), without autograd and without the eval fast path."""
    set_mode(model, train)
    args, kwargs = model_call(inputs)
    with torch.no_grad(), no_fastpath():
        return model(*args, **kwargs)


def output_leaves(value, path="output"):
    """[(path, numpy)] of a model's output: a tensor, or nested tuples/lists/dicts of them, each leaf named
    by where it sits (output[1][0] is h of (out, (h, c)); None leaves are skipped)."""
    return [(where, to_numpy(t)) for where, t in nested_leaves(value, _is_tensor, path)]


def record_calls(model, inputs, train, names=None):
    """One forward pass that records every call of the modules (see watch_modules).

    Returns (calls, outputs, error): calls in execution order as dicts {module, call (1-based per
    module), inputs, kwargs, outputs}; the model's output leaves [(path, numpy)] or None; the error
    message when a module raised (the calls up to it are kept).
    """
    calls, counts = [], {}

    def record(name, ins, outs, kwargs, layout):
        counts[name] = counts.get(name, 0) + 1
        calls.append({"module": name, "call": counts[name], "inputs": ins, "kwargs": kwargs, "outputs": outs,
                      "layout": layout})

    remove = watch_modules(model, record, names)
    try:
        return calls, output_leaves(forward(model, inputs, train)), None
    except (RuntimeError, ValueError, AssertionError, TypeError, IndexError, KeyError) as e:
        return calls, None, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    finally:
        remove()


def call_module(model, name, inputs, train, kwargs=None, layout=None):
    """Run one module alone on numpy inputs and keyword arguments (as captured from a call); returns its
    outputs (numpy). layout (a recorded call's) puts the flat inputs back where they sat, lstm(x, (h, c));
    without it they are passed in order."""
    module = _modules(model)[name]
    set_mode(module, train)
    tensors = [to_tensor(a) for a in inputs]
    args = tensors if layout is None else fill_layout(layout, tensors)
    with torch.no_grad(), no_fastpath():
        return tensors_of(module(*args, **_to_tensors(kwargs or {})))


def functional_dropout_off(model):
    """Dropout that runs inside a module's own computation (MultiheadAttention's attention weights, between
    an RNN's layers) cannot be given the other framework's mask: set to 0 for the check. Returns
    ([(module name, p)] changed, a function that restores them)."""
    changed = []
    for name, module in model.named_modules():
        if isinstance(module, UNIT_TYPES) and float(getattr(module, "dropout", 0.0) or 0.0) > 0:
            changed.append((name, module, float(module.dropout)))
            module.dropout = 0.0

    def restore():
        for _, module, p in changed:
            module.dropout = p
    return [(name, p) for name, _, p in changed], restore


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
    from dualbench.backends.torch.train import forward_objective, primary_output
    for p in state.model.parameters():
        p.grad = None
    out, loss, objective = forward_objective(state, x, y)
    objective.backward()
    return {"loss": float(loss.detach()), "objective": float(objective.detach()),
            "output": to_numpy(primary_output(out, state.task.output_leaf))}
