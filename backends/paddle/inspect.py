"""Looking inside a paddle model for `dualbench parity`: modules, calls, tensors, gradients, dropout masks.

Everything comes back as numpy under paddle's own names and in paddle's own layout (Linear
weights [in, out], BatchNorm statistics `_mean` / `_variance`); the parity engine maps names and
layouts between the frameworks (dualbench.parity.mapping). Modules are addressed by their
qualified names (`layer1.0.conv1`), as `named_sublayers()` gives them.
"""
import contextlib
import copy

import numpy as np
import paddle
from paddle import nn

from dualbench.common.errors import UserError
from dualbench.common.nested import capture_call, fill_layout, map_leaves, nested_leaves

# Recording a layer's keyword arguments (attention masks, initial states) needs a pre-hook that is handed
# them (with_kwargs), which paddle has from 3.0 on; develop builds call themselves 0.0.0.
if 0 < int(paddle.__version__.split(".")[0]) < 3:
    raise UserError(f"comparing models layer by layer needs paddle 3.0 or later (this is paddle "
                    f"{paddle.__version__}): pip install 'paddlepaddle>=3.0'")

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


def _is_tensor(value):
    return isinstance(value, paddle.Tensor)


def tensors_of(value):
    """The tensors in a layer's output (a tensor, or nested tuples/lists/dicts of them), as numpy."""
    return [to_numpy(t) for _, t in nested_leaves(value, _is_tensor)]


def set_mode(model, train):
    model.train() if train else model.eval()


def cast_model(model, dtype):
    """'float32' | 'float64': parameters and BatchNorm running statistics alike."""
    model.to(dtype=dtype)


def _modules(model):
    return dict(model.named_sublayers(include_self=True))


def _compat(name):
    """paddle.compat.nn.<name> (torch-style classes: Linear, MultiheadAttention, AvgPool2d, Softmax), or a
    class nothing is an instance of on a paddle without it (paddle.compat.nn arrived after 3.2)."""
    return getattr(getattr(getattr(paddle, "compat", None), "nn", None), name, None) or type(None)


# Layers compared as one unit: their sublayers' tensors are theirs, their sublayers are not hooked. An RNN
# lists each cell's weights a second time under `0.cell.*` (the same tensors); MultiHeadAttention's
# q/k/v/out projections together make torch's packed in_proj and out_proj.
UNIT_TYPES = (nn.MultiHeadAttention, _compat("MultiheadAttention"), nn.LSTM, nn.GRU, nn.SimpleRNN)
# Containers whose calls are recorded (and compared) as well as their sublayers': what they compute around
# their sublayers (normalize_before, the activation between the feed-forward layers) is not a layer.
COMPOSITE_TYPES = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.TransformerEncoder,
                   nn.TransformerDecoder, nn.Transformer)


def module_table(model):
    """{qualified name: {"type", "bases", "tensors": {local name: shape}, "config", "unit", "composite"}}
    of every layer that is a leaf, holds tensors itself, is a unit (UNIT_TYPES, with its sublayers'
    tensors under dotted local names) or a composite (COMPOSITE_TYPES). A tensor held by two layers (an
    RNN's cells, tied weights) is listed once, by the first; buffers that are not saved with the model are
    left out."""
    table, seen, folded = {}, set(), []
    state = set(model.state_dict())   # non-persistent buffers (paddle's RNN _dropout_state) are not the model's
    for name, layer in model.named_sublayers(include_self=True):
        if any(name.startswith(prefix) for prefix in folded):
            continue
        unit = isinstance(layer, UNIT_TYPES)
        if unit:
            folded.append(f"{name}." if name else "")
            found = _unit_tensors(layer)
        else:
            found = {**dict(layer.named_parameters(include_sublayers=False)),
                     **dict(layer.named_buffers(include_sublayers=False))}
        own = {}
        for key, value in found.items():
            if value is not None and id(value) not in seen and f"{name}.{key}".lstrip(".") in state:
                seen.add(id(value))
                own[key] = tuple(value.shape)
        composite = isinstance(layer, COMPOSITE_TYPES)
        if next(iter(layer.children()), None) is not None and not own and not unit and not composite:
            continue   # a container: its children are the modules (the model itself is named "")
        table[name] = {"type": type(layer).__name__,
                       "bases": [c.__name__ for c in type(layer).__mro__[1:] if issubclass(c, nn.Layer) and c is not nn.Layer],
                       "tensors": own, "config": module_config(layer), "unit": unit, "composite": composite}
    return table


def _unit_tensors(layer):
    """A unit's tensors under local names. An RNN's under its cells' names (`0.cell.weight_ih`,
    `0.cell_fw.weight_ho`): its flat torch-style names are the same tensors, but with proj_size they are
    shifted (2 layers: `weight_hh_l1` is layer 1's weight_ih) and the projection has none."""
    if isinstance(layer, (nn.LSTM, nn.GRU, nn.SimpleRNN)):
        items = sorted(layer.state_dict().items(), key=lambda item: ".cell" not in item[0])
        return dict(items)
    return {**dict(layer.named_parameters()), **dict(layer.named_buffers())}


def state_shapes(model):
    """{state name: shape} without copying a tensor."""
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}


def _pair(value, n=2):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def _activation_name(fn):
    """'relu' | 'gelu' | 'gelu_tanh' for a Transformer layer's activation (paddle holds getattr(F, name):
    F.relu or F.gelu, exact by default), nn.ReLU, nn.GELU or a functools.partial of F.gelu."""
    functional = paddle.nn.functional
    keywords = getattr(fn, "keywords", None) or {}
    fn = getattr(fn, "func", fn)
    if fn is functional.relu or isinstance(fn, nn.ReLU):
        return "relu"
    if isinstance(fn, nn.GELU):
        return "gelu_tanh" if fn._approximate in (True, "tanh") else "gelu"
    if fn is functional.gelu:
        return "gelu_tanh" if keywords.get("approximate") in (True, "tanh") else "gelu"
    return getattr(fn, "__name__", type(fn).__name__)


def _torch_style_attention(module):
    """paddle.compat.nn.MultiheadAttention: torch's names, layout, defaults and mask polarity."""
    return dict(embed_dim=module.embed_dim, num_heads=module.num_heads, kdim=module.kdim, vdim=module.vdim,
                bias=module.in_proj_bias is not None or module.q_proj_bias is not None,
                batch_first=bool(module.batch_first), dropout=float(module.dropout),
                add_bias_kv=bool(module.add_bias_kv), add_zero_attn=bool(module.add_zero_attn), mask_blocks=True,
                scaling="head_dim", need_weights=None)


def _sequence_config(module):
    """Settings of the recurrent, attention, Embedding, InstanceNorm and Transformer layers, replayed by
    dualbench.parity.conventions.sequence (the same keys as the torch backend's); None for other layers.
    paddle: batch first (time_major=False; MultiHeadAttention and the Transformer layers always), a boolean
    attention mask's True keeps (mask_blocks False), Embedding returns zeros for padding_idx, InstanceNorm has
    scale and bias and keeps no running statistics. (The LSTM projection weight_ho is [hidden, proj], torch's
    weight_hr transposed: a layout the mapping handles, not a setting.)"""
    if isinstance(module, nn.layer.rnn.RNNBase):
        mode = {"LSTM": "lstm", "GRU": "gru"}.get(module.mode, "rnn")
        cell = next(layer for name, layer in module.named_sublayers() if name.split(".")[-1] in ("cell", "cell_fw"))
        # without bias paddle keeps zero biases that it does not train (stop_gradient)
        config = dict(mode=mode, hidden_size=module.hidden_size, num_layers=module.num_layers,
                      bidirectional=module.num_directions == 2, batch_first=not module.time_major,
                      proj_size=module.proj_size, dropout=float(module.dropout),
                      bias=cell.bias_ih is not None and not cell.bias_ih.stop_gradient)
        extra = {"lstm": {}, "gru": {"reset_after": True},
                 "rnn": {"nonlinearity": "relu" if module.mode == "RNN_RELU" else "tanh"}}
        return {**config, **extra[mode]}
    if isinstance(module, _compat("MultiheadAttention")):
        return _torch_style_attention(module)
    if isinstance(module, nn.MultiHeadAttention):
        return dict(embed_dim=module.embed_dim, num_heads=module.num_heads, kdim=module.kdim, vdim=module.vdim,
                    bias=module.q_proj.bias is not None, batch_first=True, dropout=float(module.dropout),
                    add_bias_kv=False, add_zero_attn=False, mask_blocks=False, scaling="head_dim",
                    need_weights=bool(module.need_weights))   # paddle: a constructor flag; per-head weights
    if isinstance(module, nn.Embedding):
        pad = module._padding_idx
        return dict(padding_idx=None if pad is None else (pad + module.weight.shape[0] if pad < 0 else pad),
                    zero_padding_output=True, max_norm=module._max_norm, norm_type=float(module._norm_type))
    if isinstance(module, nn.layer.norm._InstanceNormBase):
        return dict(eps=float(module._epsilon), affine=module.scale is not None, track_running_stats=False,
                    new_batch_weight=None)
    if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        attention = module.self_attn
        return dict(d_model=attention.embed_dim, nhead=attention.num_heads,
                    dim_feedforward=module.linear1.weight.shape[1], norm_first=bool(module.normalize_before),
                    activation=_activation_name(module.activation), layer_norm_eps=float(module.norm1._epsilon),
                    batch_first=True, dropout=float(module.dropout1.p), attn_dropout=float(attention.dropout),
                    act_dropout=float(module.dropout.p), bias=module.linear1.bias is not None, mask_blocks=False,
                    scaling="head_dim")
    return None


def _torch_style_config(module):
    """paddle.compat.nn's torch-style AvgPool2d (count_include_pad) and Softmax (dim=None: torch's implicit
    axis), which are no subclasses of nn.AvgPool2D / nn.Softmax; None for other layers. (compat.nn.Linear has
    no settings, as torch's Linear; its weight is [out, in], not nn.Linear's [in, out].)"""
    if isinstance(module, _compat("AvgPool2d")):
        return dict(kernel=_pair(module.kernel_size), stride=_pair(module.stride or module.kernel_size),
                    padding=_pair(module.padding), ceil_mode=bool(module.ceil_mode),
                    include_pad=bool(module.count_include_pad))
    if isinstance(module, _compat("Softmax")):
        return {"axis": module._dim}
    return None


def module_config(module):
    """The settings of a layer that change what it computes, in framework-neutral words (the same
    keys as the torch backend's): what the parity diagnosis replays with a convention flipped."""
    special = _sequence_config(module)
    special = _torch_style_config(module) if special is None else special
    if special is not None:
        return special
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


def _capture(args, kwargs):
    """(positional tensors as a flat numpy list, where each sat in the arguments, keyword arguments)."""
    return capture_call(args, kwargs, _is_tensor, to_numpy)


def _to_tensors(value):
    """numpy arrays as tensors, inside tuples, lists and dicts too; other values as they are."""
    return map_leaves(value, lambda v: isinstance(v, np.ndarray), to_tensor)


def watch_modules(model, callback, names=None):
    """Call callback(name, inputs, outputs, kwargs, layout) after every call of the named layers (all layers of
    module_table when names is None): inputs (positional) and outputs as lists of numpy arrays, kwargs
    {name: numpy arrays (nested as passed) or flag}, layout: where each input sat in the positional
    arguments (see call_module). Inputs are read before the layer runs, so an in-place layer shows its
    real input. Returns a function that removes the hooks.
    """
    modules = _modules(model)
    names = list(module_table(model)) if names is None else [n for n in names if n in modules]
    handles = []
    for name in names:
        pending = []

        def before(layer, args, kwargs, pending=pending):
            pending.append(_capture(args, kwargs))

        def after(layer, args, output, name=name, pending=pending):
            ins, layout, keywords = pending.pop() if pending else _capture(args, {})
            callback(name, ins, tensors_of(output), keywords, layout)
        handles.append(modules[name].register_forward_pre_hook(before, with_kwargs=True))   # paddle 3.0 on
        # the keyword arguments come from the pre-hook: a post-hook is handed them only from paddle 3.3 on
        handles.append(modules[name].register_forward_post_hook(after))
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


def model_call(inputs):
    """(args, kwargs) as tensors from numpy inputs: one array, a list of positional arrays, or
    {"args": [...], "kwargs": {name: array}} (inputs bound to forward()'s parameter names)."""
    if isinstance(inputs, dict):
        return ([to_tensor(a) for a in inputs.get("args", [])],
                _to_tensors(inputs.get("kwargs", {})))
    return [to_tensor(a) for a in (inputs if isinstance(inputs, (list, tuple)) else [inputs])], {}


@contextlib.contextmanager
def no_fastpath():
    """paddle has no fused eval path that skips its sublayers' hooks: nothing to switch off (the mirror of
    the torch backend's, where MultiheadAttention and the Transformer layers have one)."""
    yield


def forward(model, inputs, train):
    """Run the model on numpy inputs (see model_call), without autograd."""
    set_mode(model, train)
    args, kwargs = model_call(inputs)
    with paddle.no_grad(), no_fastpath():
        return model(*args, **kwargs)


def output_leaves(value, path="output"):
    """[(path, numpy)] of a model's output: a tensor, or nested tuples/lists/dicts of them, each leaf named
    by where it sits (output[1][0] is h of (out, (h, c)); None leaves are skipped)."""
    return [(where, to_numpy(t)) for where, t in nested_leaves(value, _is_tensor, path)]


def record_calls(model, inputs, train, names=None):
    """One forward pass that records every call of the layers (see watch_modules).

    Returns (calls, outputs, error): calls in execution order as dicts {module, call (1-based per
    layer), inputs, kwargs, outputs}; the model's output leaves [(path, numpy)] or None; the error
    message when a layer raised (the calls up to it are kept).
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
    """Run one layer alone on numpy inputs and keyword arguments (as captured from a call); returns its
    outputs (numpy). layout (a recorded call's) puts the flat inputs back where they sat, lstm(x, (h, c));
    without it they are passed in order."""
    layer = _modules(model)[name]
    set_mode(layer, train)
    tensors = [to_tensor(a) for a in inputs]
    args = tensors if layout is None else fill_layout(layout, tensors)
    with paddle.no_grad(), no_fastpath():
        return tensors_of(layer(*args, **_to_tensors(kwargs or {})))


def functional_dropout_off(model):
    """Dropout that runs inside a layer's own computation (MultiHeadAttention's attention weights, between
    an RNN's layers) cannot be given the other framework's mask: set to 0 for the check. Returns
    ([(layer name, p)] changed, a function that restores them)."""
    changed = []
    for name, layer in model.named_sublayers(include_self=True):
        if isinstance(layer, UNIT_TYPES) and float(getattr(layer, "dropout", 0.0) or 0.0) > 0:
            changed.append((name, layer, float(layer.dropout)))
            layer.dropout = 0.0

    def restore():
        for _, layer, p in changed:
            layer.dropout = p
    return [(name, p) for name, _, p in changed], restore


def _trainable(model):
    """{state name: parameter} of the trainable parameters under every name the state lists them by (an RNN
    lists its weights under the layer's flat names and again under its cells'). BatchNorm's _mean/_variance
    are listed as parameters in paddle, with stop_gradient set."""
    trainable = {id(p) for p in model.parameters() if not p.stop_gradient}
    return {name: p for name, p in model.state_dict().items() if id(p) in trainable}


def trainable_names(model):
    """Native names of the parameters an optimizer updates."""
    return list(_trainable(model))


def gradients(model, names=None):
    """Native name -> gradient of every trainable parameter (or of those named; zeros where none was
    computed)."""
    params = _trainable(model)
    return {name: (to_numpy(params[name].grad) if params[name].grad is not None else
                   np.zeros(tuple(params[name].shape), np.float32)) for name in (params if names is None else names)}


def loss_and_gradients(state, x, y):
    """Forward in the current mode, data loss + regularisers, backward; no optimizer step. The
    gradients stay in the model (read them with gradients()).

    Returns {"loss", "objective", "output"}; raises what the framework raises (e.g. a
    cross-entropy label of the wrong shape or dtype).
    """
    from dualbench.backends.paddle.train import forward_objective, primary_output
    state.model.clear_gradients(set_to_zero=False)
    out, loss, objective = forward_objective(state, x, y)
    objective.backward()
    return {"loss": float(loss.detach()), "objective": float(objective.detach()),
            "output": to_numpy(primary_output(out, state.task.output_leaf))}
