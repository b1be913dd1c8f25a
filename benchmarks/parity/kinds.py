"""Which torch module and which paddle layer are the same kind of layer, and how their tensors pair.

Pure data and numpy-free rules, used to match the modules of two models written separately (by
class, parameter shapes and output shapes, never by attribute names alone) and to move weights
between them. Canonical layout = torch's: torch's tensor names and orientation.

Facts this table relies on (torch 2.14, paddle 3.3):
- Linear: torch stores weight as [out, in] (y = x W^T + b), paddle as [in, out] (y = x W + b).
- BatchNorm: paddle names the running statistics `_mean` / `_variance` (torch `running_mean` /
  `running_var`) and has no `num_batches_tracked`; the old-style `paddle.nn.BatchNorm` can fuse an
  activation (`act='relu'`), whose output then equals torch's BatchNorm followed by a ReLU module.
- InstanceNorm: paddle calls the affine weight `scale`; PReLU: paddle calls its weight `_weight`.
- Conv, ConvTranspose, Embedding, LayerNorm, GroupNorm: same names and the same layout.
"""
import re

import numpy as np

from dualbench.parity.transforms import torch_shape

# class name -> canonical kind, per framework. Kinds shared with the task specs (common.tasks)
# keep the spec's words: conv, linear, bn2d, maxpool, dropout, dropout2d, relu, ...
TORCH_KINDS = {
    "Conv1d": "conv1d", "Conv2d": "conv", "Conv3d": "conv3d",
    "ConvTranspose1d": "convtranspose1d", "ConvTranspose2d": "convtranspose2d",
    "ConvTranspose3d": "convtranspose3d",
    "Linear": "linear", "Bilinear": "bilinear", "Embedding": "embedding",
    "BatchNorm1d": "bn1d", "BatchNorm2d": "bn2d", "BatchNorm3d": "bn3d", "SyncBatchNorm": "bn",
    "LayerNorm": "layernorm", "GroupNorm": "groupnorm", "LocalResponseNorm": "lrn",
    "InstanceNorm1d": "instancenorm1d", "InstanceNorm2d": "instancenorm2d",
    "InstanceNorm3d": "instancenorm3d",
    "ReLU": "relu", "ReLU6": "relu6", "LeakyReLU": "leakyrelu", "PReLU": "prelu", "ELU": "elu",
    "SELU": "selu", "CELU": "celu", "GELU": "gelu", "SiLU": "silu", "Mish": "mish",
    "Sigmoid": "sigmoid", "Tanh": "tanh", "Hardswish": "hardswish", "Hardsigmoid": "hardsigmoid",
    "Hardtanh": "hardtanh", "Softplus": "softplus", "Softsign": "softsign", "Tanhshrink": "tanhshrink",
    "LogSigmoid": "logsigmoid", "Softmax": "softmax", "LogSoftmax": "logsoftmax",
    "MaxPool1d": "maxpool1d", "MaxPool2d": "maxpool", "MaxPool3d": "maxpool3d",
    "AvgPool1d": "avgpool1d", "AvgPool2d": "avgpool", "AvgPool3d": "avgpool3d",
    "AdaptiveAvgPool1d": "adaptiveavgpool1d", "AdaptiveAvgPool2d": "adaptiveavgpool",
    "AdaptiveAvgPool3d": "adaptiveavgpool3d", "AdaptiveMaxPool1d": "adaptivemaxpool1d",
    "AdaptiveMaxPool2d": "adaptivemaxpool", "AdaptiveMaxPool3d": "adaptivemaxpool3d",
    "Dropout": "dropout", "Dropout1d": "dropout1d", "Dropout2d": "dropout2d", "Dropout3d": "dropout3d",
    "AlphaDropout": "alphadropout",
    "Flatten": "flatten", "Unflatten": "unflatten", "Identity": "identity",
    "Upsample": "upsample", "UpsamplingNearest2d": "upsample", "UpsamplingBilinear2d": "upsample",
    "PixelShuffle": "pixelshuffle", "PixelUnshuffle": "pixelunshuffle",
    "ZeroPad2d": "pad2d", "ConstantPad2d": "pad2d", "ReflectionPad2d": "pad2d", "ReplicationPad2d": "pad2d",
    "ZeroPad1d": "pad1d", "ConstantPad1d": "pad1d", "ReflectionPad1d": "pad1d", "ReplicationPad1d": "pad1d",
    "ChannelShuffle": "channelshuffle",
    "LSTM": "lstm", "GRU": "gru", "RNN": "rnn", "MultiheadAttention": "mha", "RMSNorm": "rmsnorm",
    "TransformerEncoderLayer": "transformer_encoder_layer", "TransformerDecoderLayer": "transformer_decoder_layer",
    "TransformerEncoder": "transformer_encoder", "TransformerDecoder": "transformer_decoder",
    "Transformer": "transformer",
}
PADDLE_KINDS = {
    "Conv1D": "conv1d", "Conv2D": "conv", "Conv3D": "conv3d",
    "Conv1DTranspose": "convtranspose1d", "Conv2DTranspose": "convtranspose2d",
    "Conv3DTranspose": "convtranspose3d",
    "Linear": "linear", "Bilinear": "bilinear", "Embedding": "embedding",
    "BatchNorm1D": "bn1d", "BatchNorm2D": "bn2d", "BatchNorm3D": "bn3d", "BatchNorm": "bn",
    "SyncBatchNorm": "bn",
    "LayerNorm": "layernorm", "GroupNorm": "groupnorm", "LocalResponseNorm": "lrn",
    "InstanceNorm1D": "instancenorm1d", "InstanceNorm2D": "instancenorm2d",
    "InstanceNorm3D": "instancenorm3d",
    "ReLU": "relu", "ReLU6": "relu6", "LeakyReLU": "leakyrelu", "PReLU": "prelu", "ELU": "elu",
    "SELU": "selu", "CELU": "celu", "GELU": "gelu", "Silu": "silu", "Mish": "mish",
    "Sigmoid": "sigmoid", "Tanh": "tanh", "Hardswish": "hardswish", "Hardsigmoid": "hardsigmoid",
    "Hardtanh": "hardtanh", "Softplus": "softplus", "Softsign": "softsign", "Tanhshrink": "tanhshrink",
    "LogSigmoid": "logsigmoid", "Softmax": "softmax", "LogSoftmax": "logsoftmax",
    "MaxPool1D": "maxpool1d", "MaxPool2D": "maxpool", "MaxPool3D": "maxpool3d",
    "AvgPool1D": "avgpool1d", "AvgPool2D": "avgpool", "AvgPool3D": "avgpool3d",
    "AdaptiveAvgPool1D": "adaptiveavgpool1d", "AdaptiveAvgPool2D": "adaptiveavgpool",
    "AdaptiveAvgPool3D": "adaptiveavgpool3d", "AdaptiveMaxPool1D": "adaptivemaxpool1d",
    "AdaptiveMaxPool2D": "adaptivemaxpool", "AdaptiveMaxPool3D": "adaptivemaxpool3d",
    "Dropout": "dropout", "Dropout2D": "dropout2d", "Dropout3D": "dropout3d", "AlphaDropout": "alphadropout",
    "Flatten": "flatten", "Unflatten": "unflatten", "Identity": "identity",
    "Upsample": "upsample", "UpsamplingNearest2D": "upsample", "UpsamplingBilinear2D": "upsample",
    "PixelShuffle": "pixelshuffle", "PixelUnshuffle": "pixelunshuffle",
    "Pad2D": "pad2d", "ZeroPad2D": "pad2d", "Pad1D": "pad1d", "ChannelShuffle": "channelshuffle",
    "LSTM": "lstm", "GRU": "gru", "SimpleRNN": "rnn", "MultiHeadAttention": "mha", "RMSNorm": "rmsnorm",
    "TransformerEncoderLayer": "transformer_encoder_layer", "TransformerDecoderLayer": "transformer_decoder_layer",
    "TransformerEncoder": "transformer_encoder", "TransformerDecoder": "transformer_decoder",
    "Transformer": "transformer",
    # paddle's torch-style classes (paddle.compat.nn, paddle 3.x): torch's names, torch's layouts where they
    # differ (compat Linear keeps [out, in]; compat MultiheadAttention torch's packed in_proj)
    "MultiheadAttention": "mha", "AvgPool1d": "avgpool1d", "AvgPool2d": "avgpool", "AvgPool3d": "avgpool3d",
}
KINDS = {"torch": TORCH_KINDS, "paddle": PADDLE_KINDS}

# paddle's generic BatchNorm serves 1-D, 2-D and 3-D inputs alike; ReLU and ReLU6 pair so that a port
# using one for the other is compared (and diagnosed) at that module
COMPATIBLE = {frozenset(("bn", k)) for k in ("bn1d", "bn2d", "bn3d")} | {frozenset(("relu", "relu6"))}

BATCHNORM_KINDS = ("bn", "bn1d", "bn2d", "bn3d")
DROPOUT_KINDS = ("dropout", "dropout1d", "dropout2d", "dropout3d")
RNN_KINDS = ("lstm", "gru", "rnn")
INSTANCENORM_KINDS = ("instancenorm1d", "instancenorm2d", "instancenorm3d")
# tensors one side may hold and the other not, for the same kind of layer: an InstanceNorm's affine weight and
# bias (torch affine=False by default, paddle's InstanceNorm2D has scale and bias) and running statistics
# (torch track_running_stats=True; paddle's InstanceNorm has none). The module pair is made;
# the tensors are listed as one-sided, given non-trivial values, and the forward check shows what they do.
ONE_SIDED = {kind: ("weight", "bias", "scale", "running_mean", "running_var") for kind in INSTANCENORM_KINDS}
# containers compared beside their parts (backends' COMPOSITE_TYPES): what they compute around them
COMPOSITE_KINDS = ("transformer_encoder_layer", "transformer_decoder_layer", "transformer_encoder",
                   "transformer_decoder", "transformer")
CHANNEL_DROPOUT_KINDS = ("dropout1d", "dropout2d", "dropout3d")
ACTIVATION_KINDS = ("relu", "relu6", "leakyrelu", "elu", "selu", "celu", "gelu", "silu", "mish", "sigmoid",
                    "tanh", "hardswish", "hardsigmoid", "hardtanh", "softplus", "softsign", "tanhshrink",
                    "logsigmoid")

# Per kind: torch tensor name -> (paddle tensor name, transform). Kinds not listed pair tensors of the
# same name (ignoring leading underscores) and the same shape. torch's num_batches_tracked has no
# paddle counterpart and is never transferred.
TENSOR_RULES = {
    "linear": {"weight": ("weight", "transpose"), "bias": ("bias", "none")},
    # torch's packed q/k/v projection is paddle's three Linear layers, each [in, out]
    "mha": {"in_proj_weight": (("q_proj.weight", "k_proj.weight", "v_proj.weight"), "transpose+concat:0"),
            "in_proj_bias": (("q_proj.bias", "k_proj.bias", "v_proj.bias"), "concat:0"),
            "q_proj_weight": ("q_proj.weight", "transpose"), "k_proj_weight": ("k_proj.weight", "transpose"),
            "v_proj_weight": ("v_proj.weight", "transpose"),
            "out_proj.weight": ("out_proj.weight", "transpose"), "out_proj.bias": ("out_proj.bias", "none")},
    "instancenorm1d": {"weight": ("scale", "none"), "bias": ("bias", "none")},
    "instancenorm2d": {"weight": ("scale", "none"), "bias": ("bias", "none")},
    "instancenorm3d": {"weight": ("scale", "none"), "bias": ("bias", "none")},
    "prelu": {"weight": ("_weight", "none")},
}
def rnn_rule(t_name, paddle_tensors):
    """torch's flat RNN names -> the paddle cell that holds the tensor: weight_ih_l1 -> 1.cell.weight_ih
    (1.cell_fw. / 1.cell_bw. with _reverse when bidirectional); an LSTM projection weight_hr_l0 [proj,
    hidden] -> 0.cell.weight_ho [hidden, proj], transposed. (paddle's own flat names are shifted when the
    LSTM has a projection, so they are never used.)"""
    match = re.fullmatch(r"(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?", t_name)
    if not match:
        return None
    kind, which, layer, reverse = match.groups()
    cells = ["cell_bw"] if reverse else ["cell", "cell_fw"]
    local = f"{kind}_{'ho' if which == 'hr' else which}"
    for cell in cells:
        if f"{layer}.{cell}.{local}" in paddle_tensors:
            return f"{layer}.{cell}.{local}", "transpose" if which == "hr" else "none"
    return None


for _kind in BATCHNORM_KINDS:
    TENSOR_RULES[_kind] = {"weight": ("weight", "none"), "bias": ("bias", "none"),
                           "running_mean": ("_mean", "none"), "running_var": ("_variance", "none")}
IGNORED_TORCH_TENSORS = ("num_batches_tracked",)


def kind_of(framework, type_name, bases=()):
    """The canonical kind of a module class: its own, else its nearest known base class's (a port's
    `class MyConv(nn.Conv2D)` is a conv); classes of no known lineage are 'custom:<ClassName>'."""
    for name in (type_name, *bases):
        if name in KINDS[framework]:
            return KINDS[framework][name]
    return f"custom:{type_name}"


def kind_of_module(framework, info):
    """kind_of for a module_table entry (its "type" and "bases")."""
    return kind_of(framework, info["type"], info.get("bases", ()))


def compatible(kind_a, kind_b):
    """Same kind of layer. A model's own classes (custom:<Class>) may pair with each other whatever their
    names (a port renames RMSNorm to LlamaRMSNorm); their tensors and shapes must still pair (match.py)."""
    return kind_a == kind_b or frozenset((kind_a, kind_b)) in COMPATIBLE or \
        (is_custom(kind_a) and is_custom(kind_b))


def is_custom(kind):
    return kind.startswith("custom:")


def _plain(name):
    return name.lstrip("_").lower()


def orientations(torch_shape_, paddle_shape):
    """The transforms under which a paddle 2-D (or any) tensor has the torch tensor's shape: the shapes
    decide, not the class: ["none"], ["transpose"], both for a square weight, or []."""
    found = []
    if tuple(paddle_shape) == tuple(torch_shape_):
        found.append("none")
    if len(paddle_shape) == 2 and tuple(reversed(paddle_shape)) == tuple(torch_shape_):
        found.append("transpose")
    return found


def _fits(transform, torch_shape_, paddle_shapes):
    try:
        return torch_shape(paddle_shapes, transform) == tuple(torch_shape_)
    except ValueError:
        return False


def pair_tensors(kind, torch_tensors, paddle_tensors):
    """Pair one module's tensors: ([(torch local, paddle local(s), transform, evidence)], unmatched torch,
    unmatched paddle).

    torch_tensors / paddle_tensors: {local name: shape} in each framework's own layout. In order: the
    kind's rule (several paddle tensors for one torch tensor, e.g. attention's packed q/k/v); the same name
    (leading underscores and case ignored); then what is left, by shape, in listing order. A 2-D tensor's
    orientation comes from the shapes; a square one that the shapes cannot decide keeps the rule's (or
    "none") and its evidence says "ambiguous" (the match settles it by replaying both).
    """
    rules = TENSOR_RULES.get(kind, {})
    if kind in RNN_KINDS:
        rules = {n: found for n in torch_tensors if (found := rnn_rule(n, paddle_tensors))}
    pairs, used = [], set()
    torch_left = [n for n in torch_tensors if n not in IGNORED_TORCH_TENSORS]
    for t_name in list(torch_left):
        t_shape = tuple(torch_tensors[t_name])
        p_name, transform = rules.get(t_name, (None, "none"))
        if isinstance(p_name, tuple):
            if all(n in paddle_tensors and n not in used for n in p_name) and \
                    _fits(transform, t_shape, [paddle_tensors[n] for n in p_name]):
                pairs.append((t_name, p_name, transform, "rule"))
                used.update(p_name)
                torch_left.remove(t_name)
            continue
        evidence = "rule" if p_name else "name"
        if p_name is None or p_name not in paddle_tensors:
            p_name = next((p for p in paddle_tensors if p not in used and _plain(p) == _plain(t_name)), None)
            evidence = "name"
        if p_name is None or p_name in used:
            continue
        options = orientations(t_shape, paddle_tensors[p_name])
        if options:
            chosen = transform if transform in options else options[0]
            pairs.append((t_name, p_name, chosen, "ambiguous" if len(options) > 1 else evidence))
            used.add(p_name)
            torch_left.remove(t_name)
    for t_name in list(torch_left):   # what is left: by shape, in listing order
        t_shape = tuple(torch_tensors[t_name])
        p_name = next((p for p in paddle_tensors if p not in used and orientations(t_shape, paddle_tensors[p])),
                      None)
        if p_name is not None:
            options = orientations(t_shape, paddle_tensors[p_name])
            pairs.append((t_name, p_name, options[0], "ambiguous" if len(options) > 1 else "shape"))
            used.add(p_name)
            torch_left.remove(t_name)
    return pairs, torch_left, [n for n in paddle_tensors if n not in used]


# Activations a paddle layer can fuse (BatchNorm act=...), applied to a torch output in numpy.
NUMPY_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
}
