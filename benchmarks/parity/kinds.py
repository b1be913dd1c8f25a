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
import numpy as np

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
    "LSTM": "lstm", "GRU": "gru", "RNN": "rnn",
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
    "LSTM": "lstm", "GRU": "gru", "SimpleRNN": "rnn",
}
KINDS = {"torch": TORCH_KINDS, "paddle": PADDLE_KINDS}

# paddle's generic BatchNorm serves 1-D, 2-D and 3-D inputs alike; ReLU and ReLU6 pair so that a port
# using one for the other is compared (and diagnosed) at that module
COMPATIBLE = {frozenset(("bn", k)) for k in ("bn1d", "bn2d", "bn3d")} | {frozenset(("relu", "relu6"))}

BATCHNORM_KINDS = ("bn", "bn1d", "bn2d", "bn3d")
DROPOUT_KINDS = ("dropout", "dropout1d", "dropout2d", "dropout3d")
CHANNEL_DROPOUT_KINDS = ("dropout1d", "dropout2d", "dropout3d")
ACTIVATION_KINDS = ("relu", "relu6", "leakyrelu", "elu", "selu", "celu", "gelu", "silu", "mish", "sigmoid",
                    "tanh", "hardswish", "hardsigmoid", "hardtanh", "softplus", "softsign", "tanhshrink",
                    "logsigmoid")

# Per kind: torch tensor name -> (paddle tensor name, transform). Kinds not listed pair tensors of the
# same name (ignoring leading underscores) and the same shape. torch's num_batches_tracked has no
# paddle counterpart and is never transferred.
TENSOR_RULES = {
    "linear": {"weight": ("weight", "transpose"), "bias": ("bias", "none")},
    "instancenorm1d": {"weight": ("scale", "none"), "bias": ("bias", "none")},
    "instancenorm2d": {"weight": ("scale", "none"), "bias": ("bias", "none")},
    "instancenorm3d": {"weight": ("scale", "none"), "bias": ("bias", "none")},
    "prelu": {"weight": ("_weight", "none")},
}
for _kind in BATCHNORM_KINDS:
    TENSOR_RULES[_kind] = {"weight": ("weight", "none"), "bias": ("bias", "none"),
                           "running_mean": ("_mean", "none"), "running_var": ("_variance", "none")}
IGNORED_TORCH_TENSORS = ("num_batches_tracked",)
TRANSFORMS = ("none", "transpose")


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
    """Same kind of layer. Unknown (custom) classes match only a class of the same name."""
    return kind_a == kind_b or frozenset((kind_a, kind_b)) in COMPATIBLE


TRANSPOSE_TILE = 256


def contiguous_transpose(array):
    """array.T as a C-contiguous copy, tile by tile: numpy's plain copy of a transposed view walks memory
    with a stride of a whole row and took 0.84 s for a 4096 x 25088 float32 weight (vgg11's first
    classifier layer) here, the tiles 0.28 s."""
    array = np.asarray(array)
    if array.ndim != 2 or array.size < TRANSPOSE_TILE * TRANSPOSE_TILE:
        return np.ascontiguousarray(array.T)
    out = np.empty(array.shape[::-1], array.dtype)
    rows, cols = array.shape
    for i in range(0, rows, TRANSPOSE_TILE):
        for j in range(0, cols, TRANSPOSE_TILE):
            out[j:j + TRANSPOSE_TILE, i:i + TRANSPOSE_TILE] = array[i:i + TRANSPOSE_TILE, j:j + TRANSPOSE_TILE].T
    return out


def apply_transform(array, transform):
    """numpy array in one layout -> the other, C-contiguous (transpose is its own inverse)."""
    if transform == "none":
        return array
    if transform == "transpose":
        return contiguous_transpose(array)
    raise ValueError(f"unknown transform {transform!r} (known: {', '.join(TRANSFORMS)})")


def transformed_shape(shape, transform):
    return tuple(reversed(shape)) if transform == "transpose" else tuple(shape)


def _plain(name):
    return name.lstrip("_").lower()


def pair_tensors(kind, torch_tensors, paddle_tensors):
    """Pair one module's tensors: ([(torch local, paddle local, transform)], unmatched torch, unmatched paddle).

    torch_tensors / paddle_tensors: {local name: shape} in each framework's own layout. A pair is
    made only where the rule (or equal names) holds and the shapes agree after the transform.
    """
    rules = TENSOR_RULES.get(kind, {})
    pairs, used = [], set()
    for t_name, t_shape in torch_tensors.items():
        if t_name in IGNORED_TORCH_TENSORS:
            continue
        p_name, transform = rules.get(t_name, (None, "none"))
        if p_name is None:
            p_name = next((p for p in paddle_tensors if p not in used and _plain(p) == _plain(t_name)), None)
        if p_name in paddle_tensors and p_name not in used and \
                transformed_shape(paddle_tensors[p_name], transform) == tuple(t_shape):
            pairs.append((t_name, p_name, transform))
            used.add(p_name)
    torch_left = [n for n in torch_tensors if n not in IGNORED_TORCH_TENSORS and n not in {p[0] for p in pairs}]
    paddle_left = [n for n in paddle_tensors if n not in used]
    return pairs, torch_left, paddle_left


# Activations a paddle layer can fuse (BatchNorm act=...), applied to a torch output in numpy.
NUMPY_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
}
