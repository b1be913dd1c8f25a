"""The known torch/paddle convention differences, each replayable: what a layer (or a loss) computes
under every value of the convention, in numpy (float64), from the captured input and the weights.

The parity diagnosis names a cause only when a replay proves it: the replay with torch's settings
reproduces torch's output, and the replay with one convention flipped reproduces paddle's (that is,
flipping it makes the difference vanish). Layers and losses are computed here from their
definitions, not with either framework, so neither side is the reference by construction.

Settings use the backends' framework-neutral keys (backends/*/inspect.module_config).
No torch, no paddle here.
"""
from dataclasses import dataclass
from typing import Callable, Tuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from dualbench.parity.kinds import BATCHNORM_KINDS, DROPOUT_KINDS

# ---------------------------------------------------------------------------------------------
# Layers in numpy


def _weights(weights, name):
    value = weights.get(name)
    return None if value is None else np.asarray(value, np.float64)


def linear(x, weights, config, train, mask):
    w, b = _weights(weights, "weight"), _weights(weights, "bias")
    y = x @ (w.T if config.get("weight_layout", "out_in") == "out_in" else w)
    return y if b is None else y + b


def _same_padding(size, kernel, stride, dilation):
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2


PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def conv(x, weights, config, train, mask):
    """2-D convolution (NCHW), with stride, padding, dilation, groups and padding mode."""
    w, b = _weights(weights, "weight"), _weights(weights, "bias")
    (kh, kw), (sh, sw), (dh, dw) = w.shape[2:], config["stride"], config["dilation"]
    padding = config["padding"]
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        padding = (_same_padding(x.shape[2], kh, sh, dh), _same_padding(x.shape[3], kw, sw, dw))
    ph, pw = padding[:2]
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), mode=PAD_MODES[config.get("padding_mode", "zeros")])
    windows = sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    groups = config.get("groups", 1)
    cin, cout = w.shape[1], w.shape[0] // groups
    outs = [np.einsum("nchwij,ocij->nohw", windows[:, g * cin:(g + 1) * cin], w[g * cout:(g + 1) * cout],
                      optimize=True) for g in range(groups)]
    y = np.concatenate(outs, axis=1)
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def batchnorm(x, weights, config, train, mask):
    axes = tuple(i for i in range(x.ndim) if i != 1)
    shape = [1, -1] + [1] * (x.ndim - 2)
    if train and not config.get("use_global_stats"):
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    else:
        mean, var = _weights(weights, "running_mean"), _weights(weights, "running_var")
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + config["eps"])
    w, b = _weights(weights, "weight"), _weights(weights, "bias")
    y = y * (w.reshape(shape) if w is not None else 1) + (b.reshape(shape) if b is not None else 0)
    return ACTIVATIONS[config["fused_activation"]](y, config) if config.get("fused_activation") else y


def layernorm(x, weights, config, train, mask):
    w, b = _weights(weights, "weight"), _weights(weights, "bias")
    dims = tuple(range(x.ndim - (w.ndim if w is not None else 1), x.ndim))
    y = (x - x.mean(axis=dims, keepdims=True)) / np.sqrt(x.var(axis=dims, keepdims=True) + config["eps"])
    return y * (w if w is not None else 1) + (b if b is not None else 0)


def groupnorm(x, weights, config, train, mask):
    n, c = x.shape[:2]
    g = x.reshape(n, config["groups"], -1)
    y = ((g - g.mean(axis=2, keepdims=True)) / np.sqrt(g.var(axis=2, keepdims=True) + config["eps"])).reshape(x.shape)
    shape = [1, -1] + [1] * (x.ndim - 2)
    w, b = _weights(weights, "weight"), _weights(weights, "bias")
    return y * (w.reshape(shape) if w is not None else 1) + (b.reshape(shape) if b is not None else 0)


def _pool_size(size, kernel, stride, pad, ceil_mode):
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:   # the last window must start inside the input
        out -= 1
    return out


def pool(x, weights, config, train, mask, kind="max"):
    """2-D max or average pooling with padding, ceil_mode and (average) include_pad, as torch
    defines them: windows reaching past the padding (ceil_mode) never count."""
    (kh, kw), (sh, sw), (ph, pw) = config["kernel"], config["stride"], config["padding"]
    h, w = x.shape[2:]
    oh, ow = (_pool_size(h, kh, sh, ph, config["ceil_mode"]), _pool_size(w, kw, sw, pw, config["ceil_mode"]))
    big_h, big_w = (oh - 1) * sh + kh, (ow - 1) * sw + kw
    fill = -np.inf if kind == "max" else 0.0
    values = np.full(x.shape[:2] + (max(big_h, h + ph), max(big_w, w + pw)), fill)
    values[:, :, ph:ph + h, pw:pw + w] = x
    counted = np.zeros(values.shape[2:])
    if kind == "avg" and config.get("include_pad", True):
        counted[:min(h + 2 * ph, counted.shape[0]), :min(w + 2 * pw, counted.shape[1])] = 1
    else:
        counted[ph:ph + h, pw:pw + w] = 1
    win = sliding_window_view(values[:, :, :big_h, :big_w], (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    if kind == "max":
        return win.max(axis=(-2, -1))
    cnt = sliding_window_view(counted[:big_h, :big_w], (kh, kw))[::sh, ::sw].sum(axis=(-2, -1))
    return win.sum(axis=(-2, -1)) / np.maximum(cnt, 1)


def _source(out_size, in_size, scale, coordinate):
    dst = np.arange(out_size, dtype=np.float64)
    if coordinate == "align_corners":
        return dst * ((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
    ratio = 1.0 / scale if scale else in_size / out_size
    if coordinate == "half_pixel":
        return np.maximum((dst + 0.5) * ratio - 0.5, 0.0)
    return dst * ratio


def upsample(x, weights, config, train, mask):
    """Nearest or bilinear resizing (NCHW) under a coordinate convention: align_corners, half_pixel
    (torch's align_corners=False, paddle's align_mode=0) or asymmetric (paddle's align_mode=1)."""
    h, w = x.shape[2:]
    scale = config.get("scale")
    scales = tuple(scale) if isinstance(scale, (tuple, list)) else (scale, scale)
    size = config.get("size")
    if size is not None:
        oh, ow = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        scales = (None, None)
    else:
        oh, ow = int(np.floor(h * scales[0])), int(np.floor(w * scales[1]))
    if config["mode"] == "nearest":
        rows = np.minimum(np.floor(_source(oh, h, scales[0], "asymmetric")).astype(int), h - 1)
        cols = np.minimum(np.floor(_source(ow, w, scales[1], "asymmetric")).astype(int), w - 1)
        return x[:, :, rows][:, :, :, cols]
    out = x
    for axis, (n_out, n_in, s) in ((2, (oh, h, scales[0])), (3, (ow, w, scales[1]))):
        src = np.minimum(_source(n_out, n_in, s, config["coordinate"]), n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = (src - lo).reshape([-1 if i == axis else 1 for i in range(4)])
        out = np.take(out, lo, axis=axis) * (1 - frac) + np.take(out, hi, axis=axis) * frac
    return out


def _erf(x):
    try:
        from scipy.special import erf
        return erf(x)
    except ImportError:   # scipy is an extra; math.erf element by element is slower but exact
        import math
        return np.vectorize(math.erf)(x)


def _gelu(x, config):
    if config.get("approximate") == "tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + _erf(x / np.sqrt(2)))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _hardsigmoid(x, config):
    return np.clip(config.get("slope", 1 / 6) * x + config.get("offset", 0.5), 0, 1)


def _softmax(x, axis):
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def _axis(x, axis):
    """torch's Softmax(dim=None) picks dim 0 for 0-, 1- and 3-d inputs, else 1."""
    return axis if axis is not None else (0 if x.ndim in (0, 1, 3) else 1)


ACTIVATIONS = {
    "relu": lambda x, c: np.maximum(x, 0),
    "relu6": lambda x, c: np.clip(x, 0, 6),
    "sigmoid": lambda x, c: _sigmoid(x),
    "tanh": lambda x, c: np.tanh(x),
    "gelu": _gelu,
    "silu": lambda x, c: x / (1 + np.exp(-x)),
    "hardsigmoid": _hardsigmoid,
    "hardswish": lambda x, c: x * _hardsigmoid(x, c),
    "leakyrelu": lambda x, c: np.where(x > 0, x, c.get("negative_slope", 0.01) * x),
    "elu": lambda x, c: np.where(x > 0, x, c.get("alpha", 1.0) * (np.exp(x) - 1)),
    "softmax": lambda x, c: _softmax(x, _axis(x, c.get("axis"))),
    "logsoftmax": lambda x, c: np.log(_softmax(x, _axis(x, c.get("axis")))),
}


def activation(x, weights, config, train, mask):
    return ACTIVATIONS[config["function"]](x, config)


def dropout(x, weights, config, train, mask):
    p = config["p"]
    if not train:
        return x if config["upscale_in_train"] else x * (1 - p)
    return x * mask / (1 - p) if config["upscale_in_train"] else x * mask


COMPUTE = {"linear": linear, "conv": conv, "layernorm": layernorm, "groupnorm": groupnorm,
           "maxpool": lambda *a: pool(*a, kind="max"), "avgpool": lambda *a: pool(*a, kind="avg"),
           "upsample": upsample, **{k: batchnorm for k in BATCHNORM_KINDS},
           **{k: activation for k in ACTIVATIONS}, **{k: dropout for k in DROPOUT_KINDS}}


def compute(kind, inputs, weights, config, train, mask=None):
    """What a layer of this kind computes with these settings, or None for kinds not modelled."""
    fn = COMPUTE.get(kind)
    if fn is None or not inputs:
        return None
    config = dict(config, function=config.get("function", kind))
    return fn(np.asarray(inputs[0], np.float64), weights, config, train, mask)


# ---------------------------------------------------------------------------------------------
# The conventions


@dataclass(frozen=True)
class Convention:
    key: str                 # the setting that is flipped (a module_config key)
    kinds: Tuple[str, ...]
    title: str               # what differs, in a few words
    torch: str               # torch's default, in words
    paddle: str              # paddle's default, in words
    fix: str
    candidates: Callable     # (torch settings, paddle settings) -> values to try

    def values(self, torch_config, paddle_config):
        seen = []
        for value in self.candidates(torch_config, paddle_config):
            if value is not None and value not in seen:
                seen.append(value)
        return seen


def _both(key, *more):
    return lambda t, p: [t.get(key), p.get(key), *more]


NORMS = BATCHNORM_KINDS + ("layernorm", "groupnorm")
CONVENTIONS = [
    Convention("weight_layout", ("linear",), "Linear weight orientation",
               "weight [out, in], y = x W^T + b", "weight [in, out], y = x W + b",
               "transpose 2-D Linear weights when copying them between the frameworks (the mapping's "
               "'transpose'; a square weight cannot be caught by its shape)",
               lambda t, p: ["out_in", "in_out"]),
    Convention("eps", NORMS, "normalisation epsilon", "eps 1e-5", "epsilon 1e-5",
               "give both layers the same epsilon", _both("eps", 1e-5, 1e-3, 1e-4, 1e-6, 1e-2, 1e-1)),
    Convention("use_global_stats", BATCHNORM_KINDS, "BatchNorm statistics in train mode",
               "batch statistics in train mode", "batch statistics unless use_global_stats=True",
               "leave paddle's use_global_stats unset (None) so that train mode normalises with the batch",
               lambda t, p: [False, True]),
    Convention("include_pad", ("avgpool",), "AvgPool padding in the average",
               "count_include_pad=True: padded zeros count", "exclusive=True: padded zeros do not count",
               "set paddle exclusive=False, or torch count_include_pad=False", lambda t, p: [True, False]),
    Convention("ceil_mode", ("maxpool", "avgpool"), "pooling ceil_mode", "ceil_mode=False", "ceil_mode=False",
               "copy ceil_mode: with it the output size is ceil((H+2p-k)/s)+1 instead of floor(...)+1",
               lambda t, p: [False, True]),
    Convention("padding", ("maxpool", "avgpool", "conv"), "padding", "padding 0", "padding 0",
               "give both layers the same padding", _both("padding")),
    Convention("padding_mode", ("conv",), "convolution padding mode", "padding_mode='zeros'",
               "padding_mode='zeros'", "give both convolutions the same padding_mode",
               lambda t, p: list(PAD_MODES)),
    Convention("coordinate", ("upsample",), "interpolation coordinates",
               "align_corners=False: half-pixel centres", "align_corners=False, align_mode=0: half-pixel centres",
               "match align_corners, and paddle's align_mode (0 = torch's half-pixel, 1 = asymmetric)",
               lambda t, p: ["align_corners", "half_pixel", "asymmetric"]),
    Convention("approximate", ("gelu",), "GELU exact or tanh approximation", "approximate='none' (erf)",
               "approximate=False (erf)", "use the same GELU form (torch approximate='tanh' is paddle "
               "approximate=True)", lambda t, p: ["none", "tanh"]),
    Convention("slope", ("hardsigmoid", "hardswish"), "hard-sigmoid slope",
               "relu6(x + 3) / 6: slope 1/6, offset 0.5", "slope 0.1666667, offset 0.5 (the old fluid "
               "hard_sigmoid: slope 0.2)", "use slope 1/6 and offset 0.5 (F.hardsigmoid's defaults)",
               lambda t, p: [1 / 6, 0.2]),
    Convention("function", ("relu", "relu6"), "ReLU or ReLU6", "nn.ReLU / nn.ReLU6", "nn.ReLU / nn.ReLU6",
               "use the same activation (ReLU6 clips at 6)", lambda t, p: ["relu", "relu6"]),
    Convention("negative_slope", ("leakyrelu",), "LeakyReLU slope", "negative_slope 0.01",
               "negative_slope 0.01", "give both the same negative slope",
               _both("negative_slope", 0.01, 0.02, 0.1, 0.2)),
    Convention("axis", ("softmax", "logsoftmax"), "softmax axis", "dim (None: 1 for 2-d and 4-d inputs)",
               "axis=-1", "give the softmax the same axis (paddle's default is the last one)",
               lambda t, p: [t.get("axis"), p.get("axis"), 1, -1, 0]),
    Convention("upscale_in_train", DROPOUT_KINDS, "dropout scaling mode",
               "kept values x 1/(1-p) in train, identity in eval",
               "mode='upscale_in_train' (the same); 'downscale_in_infer' scales by (1-p) in eval instead",
               "use paddle's default mode='upscale_in_train'", lambda t, p: [True, False]),
]
BY_KEY = {c.key: c for c in CONVENTIONS}


def conventions_for(kind):
    return [c for c in CONVENTIONS if kind in c.kinds]


def close(a, b, atol, rtol):
    """Whether b reproduces a: same shape and max|a - b| <= atol + rtol * max|a|."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return False
    if not a.size:
        return True
    return bool(np.isfinite(b).all() and np.abs(a - b).max() <= atol + rtol * np.abs(a).max())


def _replay(compute_with, conventions, torch_config, paddle_config, torch_out, paddle_out, tol, catch=()):
    """The proof shared by every replay (this module's layers, conventions.sequence's through
    conventions.replay): compute_with(settings) is the layer's output under those settings, None where
    it is not modelled; `catch` names the errors by which a flipped setting reproduces nothing.

    Returns None when the replay with torch's settings does not reproduce torch's output (the layer is
    not modelled faithfully: no claim is made), else [(Convention, torch value, flipped value, max_abs
    of the flipped replay against paddle)], empty when no single flip explains the difference.
    """
    base = compute_with(torch_config)
    if base is None or not close(torch_out, base, *tol):
        return None
    proven = []
    for convention in conventions:
        values = convention.values(torch_config, paddle_config)
        torch_value = torch_config.get(convention.key, values[0])
        for value in values:
            if value == torch_value:
                continue
            try:
                flipped = compute_with(dict(torch_config, **{convention.key: value}))
            except catch:
                continue
            if flipped is not None and close(paddle_out, flipped, *tol):
                gap = float(np.abs(np.asarray(paddle_out, np.float64) - flipped).max()) if np.size(flipped) else 0.0
                proven.append((convention, torch_value, value, gap))
    return proven


def replay(kind, inputs, weights, torch_config, paddle_config, torch_out, paddle_out, train, mask, tol):
    """Which flipped conventions make the layer's replay reproduce paddle's output (see _replay)."""
    torch_config = dict(torch_config, function=torch_config.get("function", kind))
    return _replay(lambda config: compute(kind, inputs, weights, config, train, mask), conventions_for(kind),
                   torch_config, paddle_config, torch_out, paddle_out, tol)


# ---------------------------------------------------------------------------------------------
# Cross-entropy


def _log_softmax(x):
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def cross_entropy(logits, labels, smoothing=0.0, axis=1, softmax_twice=False):
    """Mean cross-entropy of integer labels, with label smoothing, the class axis, and a softmax
    applied before a cross-entropy that applies its own (paddle use_softmax=True, torch always)."""
    x = np.moveaxis(np.asarray(logits, np.float64), axis, -1)
    if softmax_twice:
        x = np.exp(_log_softmax(x))
    log_p = _log_softmax(x)
    labels = np.asarray(labels).astype(int)
    if labels.shape != log_p.shape[:-1]:
        return None
    picked = np.take_along_axis(log_p, labels[..., None], axis=-1)[..., 0]
    loss = -(1 - smoothing) * picked - smoothing * log_p.mean(axis=-1)
    return float(loss.mean())


LOSS_CONVENTIONS = [   # (key, title, torch default, paddle default, values)
    ("smoothing", "label smoothing", "label_smoothing=0.0", "label_smoothing=0.0", [0.0, 0.05, 0.1, 0.2]),
    ("axis", "cross-entropy class axis", "the class axis is 1", "axis=-1 (the last)", [1, -1]),
    ("softmax_twice", "cross-entropy input", "logits (cross_entropy applies the softmax)",
     "logits (use_softmax=True applies the softmax)", [False, True]),
]


def replay_cross_entropy(output, labels, torch_loss, paddle_loss, tol):
    """[(title, torch default, paddle default, flipped key, value, |paddle - flipped|)] of the flips that
    reproduce paddle's loss while the default reproduces torch's; None when the default does not
    reproduce torch's loss."""
    base = cross_entropy(output, labels)
    if base is None or not close(torch_loss, base, *tol):
        return None
    proven = []
    for key, title, t_default, p_default, values in LOSS_CONVENTIONS:
        for value in values[1:]:
            flipped = cross_entropy(output, labels, **{key: value})
            if flipped is not None and close(paddle_loss, flipped, *tol):
                proven.append((title, t_default, p_default, key, value, abs(float(paddle_loss) - flipped)))
    return proven


def table():
    """Every convention the diagnosis can prove, in words: [(title, torch default, paddle default, fix)]."""
    from dualbench.parity.conventions.optimizers import DOCS
    from dualbench.parity.conventions.rules import KNOWN
    rows = [(c.title, c.torch, c.paddle, c.fix) for c in CONVENTIONS]
    rows += [(title, t, p, "give both the same setting") for _, title, t, p, _ in LOSS_CONVENTIONS]
    rows += [("BatchNorm momentum convention", "momentum 0.1 = the new batch's weight",
              "momentum 0.9 = the old value's weight", KNOWN["bn_momentum"].split(";")[-1].strip()),
             ("BatchNorm biased vs unbiased running variance", "running_var from the unbiased batch variance",
              "_variance from the biased batch variance", "expected: train outputs agree; copy the statistics "
                                                          "before comparing eval outputs")]
    return rows + list(DOCS)
