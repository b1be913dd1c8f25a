"""Sequence, attention and embedding layers in numpy (float64), and the conventions in which torch and
paddle (or a port) differ for them, each replayable: LSTM, GRU, RNN, multi-head attention, Transformer
encoder and decoder layers, InstanceNorm and Embedding.

Every replay is `fn(args, kwargs, weights, config, train)`:
- args: the torch call's positional inputs (numpy); an LSTM's (h0, c0) may come as a pair or flat;
- kwargs: the torch call's keyword tensors and flags (attn_mask, key_padding_mask, need_weights,
  average_attn_weights, is_causal, src_mask, src_key_padding_mask, tgt_mask, memory_mask, hx, ...);
- weights: canonical weights = torch's parameter names (local to the module) and layouts:
  `weight_ih_l0`, `weight_hr_l0`, `in_proj_weight`, `q_proj_weight`, `out_proj.weight`,
  `self_attn.in_proj_weight`, `linear1.weight`, `norm1.weight`, `running_mean`, ...;
- config: the module's settings, backends/*/inspect.module_config's framework-neutral keys;
- train: the mode. Dropout is not replayed: a dropout > 0 in train mode raises ValueError.
Returns the module's output tensors as a list of float64 arrays in torch's order (LSTM [out, h_n,
c_n]; GRU/RNN [out, h_n]; MHA [attn_output] or [attn_output, attn_weights]). A replay raises ValueError
for what it does not model (dropout in train mode, add_bias_kv) and numpy's ValueError where a flipped
setting makes the call inconsistent (batch_first flipped under a [L, S] mask): not a reproduction.

Facts the replays and conventions rely on (torch 2.14.1, paddle 3.3.1, checked by
tests/test_sequence_replays.py):
- paddle.nn.LSTM/GRU/SimpleRNN keep torch's names, shapes and gate order (LSTM i,f,g,o; GRU r,z,n) and
  torch's GRU formula n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); their state dict lists every tensor
  a second time under the cell's name (`0.cell.weight_ih`, `0.cell_fw.` / `0.cell_bw.` when
  bidirectional). paddle's default is time_major=False (batch first), torch's batch_first=False.
- LSTM projection: torch `weight_hr_l{k}` is [proj, hidden] (h = W_hr h); paddle's cell holds
  `weight_ho` [hidden, proj] (h = h W_ho), and with a projection paddle's torch-style flat names are
  shifted (2 layers: its `weight_hh_l1` is layer 1's weight_ih).
- paddle.nn.MultiHeadAttention: q_proj/k_proj/v_proj/out_proj Linears ([in, out] weights), batch first,
  a boolean attn_mask True = may attend (torch: True = may not), per-head weights [N, H, L, S] when
  built with need_weights=True; both scale q by 1/sqrt(head_dim). paddle.compat.nn.MultiheadAttention
  has torch's names, layout, mask polarity and seq-first default.
- Embedding(padding_idx=k): paddle returns zeros for id k whatever the row holds, torch returns the row.
- InstanceNorm: torch affine=False, track_running_stats=False; paddle has scale (=1) and bias (=0) and
  no running statistics (instance statistics in eval too).
No torch, no paddle here.
"""
import numpy as np

from dualbench.parity.conventions.layers import ACTIVATIONS, Convention, _sigmoid, _softmax, _weights

# ---------------------------------------------------------------------------------------------
# Helpers


def _sub(weights, prefix):
    """The weights under `prefix.`, with the prefix taken off (self_attn.in_proj_weight -> in_proj_weight)."""
    return {k[len(prefix) + 1:]: v for k, v in weights.items() if k.startswith(prefix + ".")}


def _no_dropout(config, train, *keys):
    for key in keys or ("dropout",):
        if train and (config.get(key) or 0) > 0:
            raise ValueError(f"{key}={config[key]} in train mode: dropout is not replayed")


def _affine(x, w, b):
    return x @ w.T + (b if b is not None else 0.0)


def _layernorm(x, weights, prefix, eps):
    y = (x - x.mean(axis=-1, keepdims=True)) / np.sqrt(x.var(axis=-1, keepdims=True) + eps)
    w, b = _weights(weights, prefix + ".weight"), _weights(weights, prefix + ".bias")
    return y * (w if w is not None else 1.0) + (b if b is not None else 0.0)


def _arg(args, kwargs, index, name, default=None):
    if len(args) > index and args[index] is not None:
        return args[index]
    return kwargs.get(name, default)


# ---------------------------------------------------------------------------------------------
# Embedding


def embedding(args, kwargs, weights, config, train):
    """weight[ids]; with zero_padding_output (paddle) the padding id's output is zeros, else (torch) the
    row itself. max_norm renormalises the looked-up rows as torch does (scale max_norm / (norm + 1e-7))."""
    ids = np.asarray(args[0]).astype(np.int64)
    table = _weights(weights, "weight")
    if config.get("max_norm") is not None:
        table = table.copy()
        rows = np.unique(ids)
        norms = np.linalg.norm(table[rows], ord=config.get("norm_type", 2.0), axis=1)
        scale = np.where(norms > config["max_norm"], config["max_norm"] / (norms + 1e-7), 1.0)
        table[rows] *= scale[:, None]
    out = table[ids]
    pad = config.get("padding_idx")
    if pad is not None and config.get("zero_padding_output"):
        pad = pad + table.shape[0] if pad < 0 else pad
        out = np.where((ids == pad)[..., None], 0.0, out)
    return [out]


# ---------------------------------------------------------------------------------------------
# LSTM, GRU, RNN


def _projection(h, w_hr, layout):
    """torch: h W_hr^T with W_hr [proj, hidden]; 'in_out': the same buffer read as [hidden, proj]
    (paddle's weight_ho layout) - what a port computes when it reshapes instead of transposing."""
    if layout == "in_out":
        return h @ w_hr.reshape(w_hr.shape[1], w_hr.shape[0])
    return h @ w_hr.T


def _step(mode, x, h, c, w, config):
    """One time step of one direction of one layer: (h, c) after x. w: ih, hh, b_ih, b_hh, hr."""
    gi, gh = _affine(x, w["ih"], w["b_ih"]), h @ w["hh"].T
    if mode == "lstm":
        i, f, g, o = np.split(gi + gh + (w["b_hh"] if w["b_hh"] is not None else 0.0), 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        return (h if w["hr"] is None else _projection(h, w["hr"], config.get("proj_layout", "out_in"))), c
    if mode == "gru":
        b_hh = w["b_hh"] if w["b_hh"] is not None else np.zeros(gh.shape[-1])
        i_r, i_z, i_n = np.split(gi, 3, axis=-1)
        h_r, h_z, _ = np.split(gh + b_hh, 3, axis=-1)
        r, z = _sigmoid(i_r + h_r), _sigmoid(i_z + h_z)
        hidden = h.shape[-1]
        w_hn, b_hn = w["hh"][2 * hidden:], b_hh[2 * hidden:]
        if config.get("reset_after", True):   # torch and paddle: r * (W_hn h + b_hn)
            n = np.tanh(i_n + r * (h @ w_hn.T + b_hn))
        else:                                 # the other formulation: W_hn (r * h) + b_hn
            n = np.tanh(i_n + (r * h) @ w_hn.T + b_hn)
        return (1 - z) * n + z * h, c
    pre = gi + gh + (w["b_hh"] if w["b_hh"] is not None else 0.0)
    return (np.tanh(pre) if config.get("nonlinearity", "tanh") == "tanh" else np.maximum(pre, 0.0)), c


GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def _initial_states(mode, args, kwargs, shape_h, shape_c):
    hx = _arg(args, kwargs, 1, "hx")
    if mode == "lstm":
        if hx is None:
            return np.zeros(shape_h), np.zeros(shape_c)
        if isinstance(hx, (tuple, list)):
            return np.asarray(hx[0], np.float64), np.asarray(hx[1], np.float64)
        return np.asarray(hx, np.float64), np.asarray(args[2] if len(args) > 2 else kwargs["cx"], np.float64)
    if isinstance(hx, (tuple, list)):
        hx = hx[0]
    return (np.zeros(shape_h) if hx is None else np.asarray(hx, np.float64)), None


def _recurrent(mode, args, kwargs, weights, config, train):
    """torch.nn.LSTM / GRU / RNN: num_layers, bidirectional, batch_first, bias, proj_size, initial
    states, unbatched inputs. Outputs [out, h_n] (+ c_n for LSTM), shaped as torch returns them."""
    _no_dropout(config, train and config.get("num_layers", 1) > 1)
    x = np.asarray(args[0], np.float64)
    batched = x.ndim == 3
    x = x[:, None] if not batched else (x.transpose(1, 0, 2) if config.get("batch_first") else x)
    layers, dirs = config.get("num_layers", 1), 2 if config.get("bidirectional") else 1
    hidden, proj = _weights(weights, "weight_ih_l0").shape[0] // GATES[mode], config.get("proj_size") or 0
    out_size = proj or hidden
    n = x.shape[1]
    h0, c0 = _initial_states(mode, args, kwargs, (layers * dirs, n, out_size), (layers * dirs, n, hidden))
    if h0.ndim == 2:   # unbatched states [layers * directions, size]
        h0, c0 = h0[:, None], (c0[:, None] if c0 is not None else None)
    h_n, c_n, seq = [], [], x
    for layer in range(layers):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w = {"ih": _weights(weights, "weight_ih" + sfx), "hh": _weights(weights, "weight_hh" + sfx),
                 "b_ih": _weights(weights, "bias_ih" + sfx), "b_hh": _weights(weights, "bias_hh" + sfx),
                 "hr": _weights(weights, "weight_hr" + sfx) if proj else None}
            h, c = h0[layer * dirs + d], (c0[layer * dirs + d] if c0 is not None else None)
            steps = range(seq.shape[0] - 1, -1, -1) if d else range(seq.shape[0])
            out = np.zeros((seq.shape[0], n, out_size))
            for t in steps:
                h, c = _step(mode, seq[t], h, c, w, config)
                out[t] = h
            outs.append(out)
            h_n.append(h)
            c_n.append(c)
        seq = np.concatenate(outs, axis=-1)
    out, h_n = seq, np.stack(h_n)
    out = out[:, 0] if not batched else (out.transpose(1, 0, 2) if config.get("batch_first") else out)
    result = [out, h_n if batched else h_n[:, 0]]
    if mode == "lstm":
        c_n = np.stack(c_n)
        result.append(c_n if batched else c_n[:, 0])
    return result


def lstm(args, kwargs, weights, config, train):
    return _recurrent("lstm", args, kwargs, weights, config, train)


def gru(args, kwargs, weights, config, train):
    return _recurrent("gru", args, kwargs, weights, config, train)


def rnn(args, kwargs, weights, config, train):
    return _recurrent("rnn", args, kwargs, weights, config, train)


# ---------------------------------------------------------------------------------------------
# Multi-head attention


def _additive(mask, blocks):
    """A mask as numbers to add to the scores. A boolean one blocks where it is True (blocks=True, torch:
    -inf) or where it is False (blocks=False, paddle: (mask - 1) * 1e9, so a row blocked everywhere is a
    plain softmax in paddle); a float one is added as it is."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return np.where(mask, -np.inf, 0.0) if blocks else (mask.astype(np.float64) - 1.0) * 1e9
    return mask.astype(np.float64)


def _scores_mask(attn_mask, key_padding_mask, is_causal, n, heads, length, source, blocks):
    """The additive mask [N, H, L, S] (or None) from torch's attn_mask ([L, S], [N*H, L, S] or anything
    broadcastable to [N, H, L, S]), key_padding_mask [N, S] and is_causal (used when no attn_mask)."""
    total = None
    if attn_mask is None and is_causal:   # torch's own causal mask: position i attends to j <= i
        total = np.where(np.triu(np.ones((length, source), bool), 1), -np.inf, 0.0)
    elif attn_mask is not None:
        total = _additive(attn_mask, blocks)
        if total.ndim == 3 and total.shape[0] == n * heads:
            total = total.reshape(n, heads, length, source)
    if key_padding_mask is not None:
        pad = _additive(key_padding_mask, blocks).reshape(n, 1, 1, source)
        total = pad if total is None else total + pad
    return total


SCALES = {"head_dim": lambda head_dim, embed: head_dim ** -0.5, "none": lambda head_dim, embed: 1.0,
          "embed_dim": lambda head_dim, embed: embed ** -0.5}


def _attend(q, k, v, weights, config, masks, blocked_rows_zero=True):
    """Attention on batch-first inputs q [N, L, E], k [N, S, kdim], v [N, S, vdim] with canonical
    (torch) weights; masks = (attn_mask, key_padding_mask, is_causal). Returns (out [N, L, E], per-head
    weights [N, H, L, S]). A query row blocked at every key: torch's need_weights path gives NaN, its
    scaled_dot_product_attention path (need_weights=False, the Transformer layers) zeros: blocked_rows_zero."""
    if config.get("add_bias_kv") or config.get("add_zero_attn") or "bias_k" in weights:
        raise ValueError("add_bias_kv / add_zero_attn are not replayed")
    embed, heads = q.shape[-1], config["num_heads"]
    packed, bias = _weights(weights, "in_proj_weight"), _weights(weights, "in_proj_bias")
    projections = np.split(packed, 3) if packed is not None else \
        [_weights(weights, f"{p}_proj_weight") for p in "qkv"]
    biases = np.split(bias, 3) if bias is not None else [None] * 3
    n, length, source, head_dim = q.shape[0], q.shape[1], k.shape[1], embed // heads
    split = [(_affine(x, w, b)).reshape(n, x.shape[1], heads, head_dim).transpose(0, 2, 1, 3)
             for x, w, b in zip((q, k, v), projections, biases)]
    scores = split[0] @ split[1].transpose(0, 1, 3, 2) * SCALES[config.get("scaling", "head_dim")](head_dim, embed)
    mask = _scores_mask(*masks, n, heads, length, source, config.get("mask_blocks", True))
    masked = scores if mask is None else scores + mask
    if mask is not None and not config.get("mask_blocks", True) and config.get("dtype") == "float32":
        # paddle adds -1e9 in float32, where it swallows the scores (its spacing there is 64): a row blocked
        # everywhere becomes uniform; in float64 the scores survive it
        masked = masked.astype(np.float32).astype(np.float64)
    with np.errstate(invalid="ignore"):   # a row blocked everywhere: -inf - -inf = NaN, as in torch
        attn = _softmax(masked, axis=-1)
    if blocked_rows_zero and mask is not None:
        attn = np.where(np.isneginf(scores + mask).all(axis=-1, keepdims=True), 0.0, attn)
    out = (attn @ split[2]).transpose(0, 2, 1, 3).reshape(n, length, embed)
    return _affine(out, _weights(weights, "out_proj.weight"), _weights(weights, "out_proj.bias")), attn


def _to_batch_first(x, batch_first):
    x = np.asarray(x, np.float64)
    return x if batch_first else x.transpose(1, 0, 2)


def mha(args, kwargs, weights, config, train):
    """torch.nn.MultiheadAttention(query, key, value, key_padding_mask, need_weights, attn_mask,
    average_attn_weights, is_causal): [out] or [out, weights] (averaged over heads [N, L, S], or per head
    [N, H, L, S]), batched or unbatched, seq-first unless batch_first."""
    _no_dropout(config, train)
    query = np.asarray(args[0], np.float64)
    key, value = _arg(args, kwargs, 1, "key", query), _arg(args, kwargs, 2, "value", query)
    batched, batch_first = query.ndim == 3, config.get("batch_first", False)
    kpm, attn_mask = _arg(args, kwargs, 3, "key_padding_mask"), _arg(args, kwargs, 5, "attn_mask")
    if not batched:
        query, key, value = (np.asarray(a, np.float64)[None] for a in (query, key, value))
        kpm = None if kpm is None else np.asarray(kpm)[None]
        batch_first = True
    q, k, v = (_to_batch_first(a, batch_first) for a in (query, key, value))
    need_weights = _arg(args, kwargs, 4, "need_weights", True)
    out, attn = _attend(q, k, v, weights, config, (attn_mask, kpm, bool(_arg(args, kwargs, 7, "is_causal", False))),
                        blocked_rows_zero=not need_weights)
    out = out if batch_first else out.transpose(1, 0, 2)
    result = [out if batched else out[0]]
    if need_weights:
        attn = attn.mean(axis=1) if _arg(args, kwargs, 6, "average_attn_weights", True) else attn
        result.append(attn if batched else attn[0])
    return result


# ---------------------------------------------------------------------------------------------
# Transformer layers and InstanceNorm


# a Transformer layer's activation name (backends/*/inspect._activation_name) as the layers.ACTIVATIONS
# entry and the settings that compute it
FEED_FORWARD_ACTIVATIONS = {"relu": ("relu", {}), "gelu": ("gelu", {"approximate": "none"}),
                            "gelu_tanh": ("gelu", {"approximate": "tanh"})}


def _activation(x, name):
    if name not in FEED_FORWARD_ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not replayed")
    function, settings = FEED_FORWARD_ACTIVATIONS[name]
    return ACTIVATIONS[function](x, settings)


def _feed_forward(x, weights, config):
    hidden = _activation(_affine(x, _weights(weights, "linear1.weight"), _weights(weights, "linear1.bias")),
                         config.get("activation", "relu"))
    return _affine(hidden, _weights(weights, "linear2.weight"), _weights(weights, "linear2.bias"))


def _block(x, norm, fn, weights, config):
    """x + fn(norm(x)) with norm_first, else norm(x + fn(x))."""
    eps = config.get("layer_norm_eps", 1e-5)
    if config.get("norm_first"):
        return x + fn(_layernorm(x, weights, norm, eps))
    return _layernorm(x + fn(x), weights, norm, eps)


def _padding(key_padding_mask, n):
    return None if key_padding_mask is None else np.asarray(key_padding_mask).reshape(n, -1)


def _attention_config(config):
    return dict(config, num_heads=config["nhead"])


def transformer_encoder_layer(args, kwargs, weights, config, train):
    """torch.nn.TransformerEncoderLayer(src, src_mask, src_key_padding_mask, is_causal): [out]."""
    _no_dropout(config, train, "dropout", "attn_dropout", "act_dropout")
    batch_first = config.get("batch_first", False)
    x = np.asarray(args[0], np.float64)
    batched = x.ndim == 3
    x = _to_batch_first(x, batch_first) if batched else x[None]
    kpm = _arg(args, kwargs, 2, "src_key_padding_mask")
    masks = (_arg(args, kwargs, 1, "src_mask"), _padding(kpm, x.shape[0]),
             bool(_arg(args, kwargs, 3, "is_causal", False)))
    attention = _sub(weights, "self_attn")
    x = _block(x, "norm1", lambda y: _attend(y, y, y, attention, _attention_config(config), masks)[0], weights, config)
    x = _block(x, "norm2", lambda y: _feed_forward(y, weights, config), weights, config)
    return [(x if batch_first else x.transpose(1, 0, 2)) if batched else x[0]]


def transformer_decoder_layer(args, kwargs, weights, config, train):
    """torch.nn.TransformerDecoderLayer(tgt, memory, tgt_mask, memory_mask, tgt_key_padding_mask,
    memory_key_padding_mask, tgt_is_causal, memory_is_causal): [out]."""
    _no_dropout(config, train, "dropout", "attn_dropout", "act_dropout")
    batch_first = config.get("batch_first", False)
    x, memory = np.asarray(args[0], np.float64), np.asarray(_arg(args, kwargs, 1, "memory"), np.float64)
    batched = x.ndim == 3
    x, memory = (_to_batch_first(x, batch_first), _to_batch_first(memory, batch_first)) if batched else \
        (x[None], memory[None])
    n = x.shape[0]
    tgt_kpm, mem_kpm = _arg(args, kwargs, 4, "tgt_key_padding_mask"), _arg(args, kwargs, 5, "memory_key_padding_mask")
    self_masks = (_arg(args, kwargs, 2, "tgt_mask"), _padding(tgt_kpm, n),
                  bool(_arg(args, kwargs, 6, "tgt_is_causal", False)))
    cross_masks = (_arg(args, kwargs, 3, "memory_mask"), _padding(mem_kpm, n),
                   bool(_arg(args, kwargs, 7, "memory_is_causal", False)))
    attention, cross, settings = _sub(weights, "self_attn"), _sub(weights, "multihead_attn"), _attention_config(config)
    x = _block(x, "norm1", lambda y: _attend(y, y, y, attention, settings, self_masks)[0], weights, config)
    x = _block(x, "norm2", lambda y: _attend(y, memory, memory, cross, settings, cross_masks)[0], weights, config)
    x = _block(x, "norm3", lambda y: _feed_forward(y, weights, config), weights, config)
    return [(x if batch_first else x.transpose(1, 0, 2)) if batched else x[0]]


def _instancenorm(spatial):
    def instancenorm(args, kwargs, weights, config, train):
        """torch.nn.InstanceNorm{1,2,3}d: instance statistics, except running statistics in eval mode
        with track_running_stats; weight and bias with affine (canonical names: paddle's scale is weight)."""
        x = np.asarray(args[0], np.float64)
        batched = x.ndim == spatial + 2
        x = x if batched else x[None]
        axes, shape = tuple(range(2, x.ndim)), (1, -1) + (1,) * spatial
        if config.get("track_running_stats") and not train:
            if "running_mean" not in weights or "running_var" not in weights:
                raise ValueError("track_running_stats without running_mean / running_var")
            mean = _weights(weights, "running_mean").reshape(shape)
            var = _weights(weights, "running_var").reshape(shape)
        else:
            mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
        y = (x - mean) / np.sqrt(var + config.get("eps", 1e-5))
        w, b = _weights(weights, "weight"), _weights(weights, "bias")
        if config.get("affine"):
            y = y * (w.reshape(shape) if w is not None else 1.0) + (b.reshape(shape) if b is not None else 0.0)
        return [y if batched else y[0]]
    return instancenorm


SEQUENCE_COMPUTE = {
    "embedding": embedding, "lstm": lstm, "gru": gru, "rnn": rnn, "mha": mha,
    "instancenorm1d": _instancenorm(1), "instancenorm2d": _instancenorm(2), "instancenorm3d": _instancenorm(3),
    "transformer_encoder_layer": transformer_encoder_layer, "transformer_decoder_layer": transformer_decoder_layer,
}


# ---------------------------------------------------------------------------------------------
# The conventions (facts checked with torch 2.14.1 and paddle 3.3.1 in tests/test_sequence_replays.py)

ATTENTION = ("mha", "transformer_encoder_layer", "transformer_decoder_layer")
TRANSFORMER = ("transformer_encoder_layer", "transformer_decoder_layer")
INSTANCENORMS = ("instancenorm1d", "instancenorm2d", "instancenorm3d")
SEQUENCE_CONVENTIONS = [
    Convention("mask_blocks", ATTENTION, "boolean attention-mask polarity",
               "a boolean attn_mask / key_padding_mask blocks where it is True (True = may not attend)",
               "nn.MultiHeadAttention and the Transformer layers keep where it is True (True = may attend; "
               "False becomes -1e9); paddle.compat.nn.MultiheadAttention reads it as torch does",
               "invert a boolean mask when porting it (paddle.logical_not), or pass an additive float mask "
               "(0 and -inf), which both frameworks add to the scores as it is",
               lambda t, p: [True, False]),
    Convention("batch_first", ("lstm", "gru", "rnn") + ATTENTION, "batch-first vs sequence-first axes",
               "batch_first=False: inputs and outputs [seq, batch, feature] (LSTM, GRU, RNN, "
               "MultiheadAttention, the Transformer layers)",
               "time_major=False: [batch, seq, feature] (LSTM, GRU, SimpleRNN); MultiHeadAttention and the "
               "Transformer layers are always batch first (h_n / c_n are [layers * directions, batch, "
               "hidden] in both)",
               "give torch batch_first=True (or paddle time_major=True), or transpose the input between "
               "[seq, batch] and [batch, seq]", lambda t, p: [False, True]),
    Convention("proj_layout", ("lstm",), "LSTM projection weight layout",
               "proj_size: weight_hr_l{k} [proj_size, hidden_size], h = W_hr h",
               "proj_size: the cell's weight_ho [hidden_size, proj_size], h = h W_ho; with a projection the "
               "torch-style flat names are shifted (2 layers: paddle's weight_hh_l1 is layer 1's weight_ih, "
               "weight_ih_l1 is layer 0's weight_ho) and loading torch's state dict by name silently fills "
               "layer 1's weight_ih with torch's weight_hh_l1",
               "copy weight_hr_l{k} transposed (not reshaped) into `{k}.cell.weight_ho` (`cell_fw` / "
               "`cell_bw` when bidirectional), addressing paddle's LSTM tensors by the cells' names",
               lambda t, p: ["out_in", "in_out"]),
    Convention("reset_after", ("gru",), "GRU gate formulation",
               "n = tanh(W_in x + b_in + r * (W_hn h + b_hn)): reset after the hidden product",
               "the same (paddle.nn.GRU)",
               "apply r to W_hn h + b_hn, not to h before the product (the other formulation: Keras "
               "reset_after=False, Cho et al. 2014)", lambda t, p: [True, False]),
    Convention("nonlinearity", ("rnn",), "simple RNN nonlinearity",
               "nn.RNN nonlinearity='tanh' ('relu' the other choice)",
               "nn.SimpleRNN activation='tanh' (the same choice, under another name)",
               "torch nonlinearity is paddle SimpleRNN's activation: give both the same one",
               lambda t, p: ["tanh", "relu"]),
    Convention("scaling", ATTENTION, "attention scaling",
               "scores q k^T / sqrt(head_dim), head_dim = embed_dim / num_heads",
               "q * head_dim**-0.5 (the same)",
               "scale the scores by 1/sqrt(head_dim): not 1/sqrt(embed_dim), not unscaled",
               lambda t, p: ["head_dim", "none", "embed_dim"]),
    Convention("layer_norm_eps", TRANSFORMER, "LayerNorm epsilon inside Transformer layers",
               "layer_norm_eps=1e-5", "layer_norm_eps=1e-5", "give both layers the same layer_norm_eps",
               lambda t, p: [t.get("layer_norm_eps"), p.get("layer_norm_eps"), 1e-5, 1e-6, 1e-12, 1e-3]),
    Convention("activation", TRANSFORMER, "feed-forward activation inside Transformer layers (ReLU, GELU form)",
               "activation='relu'; 'gelu' is F.gelu, exact (erf)",
               "activation='relu'; 'gelu' is F.gelu, exact (approximate=False)",
               "use the same activation and GELU form (torch nn.GELU(approximate='tanh') is paddle "
               "F.gelu(approximate=True))", lambda t, p: ["relu", "gelu", "gelu_tanh"]),
    Convention("norm_first", TRANSFORMER, "LayerNorm before or after the residual blocks",
               "norm_first=False: x = norm(x + block(x))", "normalize_before=False: the same",
               "torch norm_first is paddle normalize_before: give both the same value",
               lambda t, p: [False, True]),
    Convention("zero_padding_output", ("embedding",), "Embedding padding_idx output",
               "padding_idx: returns the row weight[padding_idx] (zeros at initialisation; only its "
               "gradient is blocked)",
               "padding_idx: returns zeros for that id whatever weight[padding_idx] holds",
               "keep weight[padding_idx] at zero on the torch side (it is initialised so and never "
               "trained), or copy a zero row", lambda t, p: [False, True]),
    Convention("affine", INSTANCENORMS, "InstanceNorm affine",
               "affine=False: no weight, no bias", "scale (initialised to 1) and bias (to 0), trained; "
               "weight_attr=False, bias_attr=False for none",
               "torch affine=True matches paddle's default; paddle weight_attr=False, bias_attr=False "
               "matches torch's", lambda t, p: [False, True]),
    Convention("track_running_stats", INSTANCENORMS, "InstanceNorm running statistics",
               "track_running_stats=False: instance statistics in eval too",
               "no running statistics at all: instance statistics in eval too (momentum is accepted, "
               "nothing uses it)", "leave torch track_running_stats=False (paddle cannot use running "
               "statistics)", lambda t, p: [False, True]),
]
