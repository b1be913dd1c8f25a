"""The numpy replays of the sequence, attention and embedding layers (dualbench.parity.conventions.sequence)
reproduce the real modules of both frameworks, and every convention they can prove is proven by exactly its
flip on a module broken on purpose.

- torch: float64 modules with random weights; the replay gets torch's state dict and the torch backend's
  module_config, and must agree within 1e-10.
- paddle: the same replay gets paddle's tensors mapped to torch's names and layouts (`canonical`, below: the
  mapping the parity engine needs) and the paddle backend's module_config.
- conventions: a module broken on purpose (a mask ported as it is, the other GRU formula, ...) differs from
  torch; the replay of torch's module with that key flipped reproduces it, unflipped it does not, and no other
  flip of the kind does. `python -m tests.test_sequence_replays` prints the before/after table.
"""
import contextlib
import functools

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("paddle")

import paddle  # noqa: E402
import paddle.nn.functional as PF  # noqa: E402
import torch  # noqa: E402

from dualbench import backends  # noqa: E402
from dualbench.parity.conventions.layers import close  # noqa: E402
from dualbench.parity.conventions.sequence import SEQUENCE_COMPUTE, SEQUENCE_CONVENTIONS  # noqa: E402

T, P = torch.nn, paddle.nn
TOL = (1e-10, 1e-10)
E, HEADS = 8, 2


def torch_config(module):
    return backends.load("torch", "inspect").module_config(module)


def paddle_config(layer):
    return backends.load("paddle", "inspect").module_config(layer)


def leaves(value, array):
    if value is None:
        return []
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in leaves(v, array)]
    return [array(value)]


def run_torch(module, args, kwargs=None, train=False):
    """torch's outputs with grad enabled: the Transformer layers' and MultiheadAttention's fused eval path
    (no grad) is not taken."""
    module.train(train)
    to = lambda v: tuple(to(a) for a in v) if isinstance(v, tuple) else \
        (torch.from_numpy(v) if isinstance(v, np.ndarray) else v)
    out = module(*[to(a) for a in args], **{k: to(v) for k, v in (kwargs or {}).items()})
    return leaves(out, lambda t: t.detach().numpy())


def run_paddle(layer, args, kwargs=None, train=False):
    layer.train() if train else layer.eval()
    to = lambda v: tuple(to(a) for a in v) if isinstance(v, tuple) else \
        (paddle.to_tensor(v) if isinstance(v, np.ndarray) else v)
    out = layer(*[to(a) for a in args], **{k: to(v) for k, v in (kwargs or {}).items()})
    return leaves(out, lambda t: t.numpy())


@contextlib.contextmanager
def paddle_float64():
    """Build paddle layers in float64 (Layer.to(dtype='float64') fails on an RNN: its _dropout_state buffer is
    never initialised)."""
    default = paddle.get_default_dtype()
    paddle.set_default_dtype("float64")
    try:
        yield
    finally:
        paddle.set_default_dtype(default)


def float64_layer(factory, *args, **kwargs):
    with paddle_float64():
        layer = factory(*args, **kwargs)
    if any(str(p.dtype) != "paddle.float64" for p in layer.parameters()):
        layer.to(dtype="float64")   # paddle.compat.nn classes ignore the default dtype
    return layer


def torch_state(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def randomize_torch(module, seed=0):
    """Every parameter and buffer random (running_var positive), so that no convention hides behind an
    initial value (a zero padding row, a unit InstanceNorm scale)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, value in module.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.rand(value.shape, generator=gen, dtype=value.dtype) + 0.5 if "running_var" in name
                            else torch.randn(value.shape, generator=gen, dtype=value.dtype) * 0.5)
    return module


def rng(seed=0):
    return np.random.default_rng(seed)


def max_abs(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")


def assert_reproduces(reference, replayed, tol=TOL):
    assert len(reference) == len(replayed), (len(reference), len(replayed))
    for i, (a, b) in enumerate(zip(reference, replayed)):
        assert a.shape == b.shape, (i, a.shape, b.shape)
        assert close(a, b, *tol), (i, max_abs(a, b))


# ---------------------------------------------------------------------------------------------
# paddle's tensors under torch's names and layouts


def _attention_canonical(state, prefix, to):
    """paddle MultiHeadAttention (q/k/v/out_proj Linears, weights [in, out]) -> torch's packed in_proj_weight
    [3E, E] (separate q/k/v_proj_weight [E, kdim] when kdim or vdim differ), in_proj_bias, out_proj."""
    weights = [state[f"{prefix}{p}_proj.weight"].T for p in "qkv"]
    out = {f"{to}out_proj.weight": state[f"{prefix}out_proj.weight"].T}
    if all(w.shape == weights[0].shape for w in weights):
        out[f"{to}in_proj_weight"] = np.concatenate(weights)
    else:
        out.update({f"{to}{p}_proj_weight": w for p, w in zip("qkv", weights)})
    if f"{prefix}q_proj.bias" in state:
        out[f"{to}in_proj_bias"] = np.concatenate([state[f"{prefix}{p}_proj.bias"] for p in "qkv"])
        out[f"{to}out_proj.bias"] = state[f"{prefix}out_proj.bias"]
    return out


def _recurrent_canonical(state, config):
    """paddle LSTM/GRU/SimpleRNN, by the cells' names (`{layer}.cell.*`, `cell_fw` / `cell_bw`): the flat
    torch-style names are shifted with a projection or without biases. weight_ho [hidden, proj] is torch's
    weight_hr_l{k} transposed."""
    out = {}
    cells = ("cell_fw", "cell_bw") if config["bidirectional"] else ("cell",)
    for layer in range(config["num_layers"]):
        for d, cell in enumerate(cells):
            suffix = f"_l{layer}" + ("_reverse" if d else "")
            names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if config["bias"] else ())
            out.update({name + suffix: state[f"{layer}.{cell}.{name}"] for name in names})
            if config["proj_size"]:
                out["weight_hr" + suffix] = state[f"{layer}.{cell}.weight_ho"].T
    return out


def canonical(kind, layer, config):
    state = {k: v.numpy() for k, v in layer.state_dict().items()}
    if kind in ("lstm", "gru", "rnn"):
        return _recurrent_canonical(state, config)
    if kind == "mha":
        return state if "in_proj_weight" in state or "q_proj_weight" in state else _attention_canonical(state, "", "")
    if kind.startswith("transformer"):
        out = _attention_canonical(state, "self_attn.", "self_attn.")
        if "cross_attn.q_proj.weight" in state:
            out.update(_attention_canonical(state, "cross_attn.", "multihead_attn."))
        for name, value in state.items():
            if name.startswith(("linear1.", "linear2.")):
                out[name] = value.T if name.endswith("weight") else value
            elif name.startswith("norm"):
                out[name] = value
        return out
    if kind.startswith("instancenorm"):
        return {("weight" if k == "scale" else k): v for k, v in state.items()}
    return state


def _attention_paddle(source, prefix, to):
    """torch's attention tensors (under prefix) -> paddle MultiHeadAttention's (under to)."""
    if prefix + "in_proj_weight" in source:
        weights = np.split(source[prefix + "in_proj_weight"], 3)
    else:
        weights = [source[f"{prefix}{p}_proj_weight"] for p in "qkv"]
    out = {f"{to}{p}_proj.weight": w.T for p, w in zip("qkv", weights)}
    out[f"{to}out_proj.weight"] = source[prefix + "out_proj.weight"].T
    if prefix + "in_proj_bias" in source:
        out.update({f"{to}{p}_proj.bias": b for p, b in zip("qkv", np.split(source[prefix + "in_proj_bias"], 3))})
        out[f"{to}out_proj.bias"] = source[prefix + "out_proj.bias"]
    return out


def paddle_from_torch(kind, layer, module):
    """The (float64) paddle layer holding the torch module's weights: the inverse of `canonical`."""
    config, source = paddle_config(layer), torch_state(module)
    if kind in ("lstm", "gru", "rnn"):
        cells = ("cell_fw", "cell_bw") if config["bidirectional"] else ("cell",)
        values = {}
        for layer_index in range(config["num_layers"]):
            for d, cell in enumerate(cells):
                suffix = f"_l{layer_index}" + ("_reverse" if d else "")
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    if name + suffix in source:
                        values[f"{layer_index}.{cell}.{name}"] = source[name + suffix]
                if config["proj_size"]:
                    values[f"{layer_index}.{cell}.weight_ho"] = source["weight_hr" + suffix].T
    elif kind == "mha":
        values = _attention_paddle(source, "", "")
    elif kind.startswith("transformer"):
        values = _attention_paddle(source, "self_attn.", "self_attn.")
        if "multihead_attn.in_proj_weight" in source:
            values.update(_attention_paddle(source, "multihead_attn.", "cross_attn."))
        values.update({k: (v.T if k.startswith("linear") and k.endswith("weight") else v)
                       for k, v in source.items() if k.startswith(("linear1.", "linear2.", "norm"))})
    elif kind.startswith("instancenorm"):
        values = {("scale" if k == "weight" else k): v for k, v in source.items() if k in ("weight", "bias")}
    else:
        values = dict(source)
    state = layer.state_dict()
    for name, value in values.items():
        assert tuple(state[name].shape) == value.shape, (name, tuple(state[name].shape), value.shape)
        state[name].set_value(np.ascontiguousarray(value))
    return layer


# ---------------------------------------------------------------------------------------------
# The replays reproduce torch's modules

RECURRENT = [("lstm", {}), ("lstm", dict(num_layers=2, bidirectional=True)),
             ("lstm", dict(batch_first=True, num_layers=2)),
             ("lstm", dict(proj_size=3, num_layers=2, bidirectional=True)),
             ("lstm", dict(bias=False, batch_first=True)),
             ("gru", {}), ("gru", dict(num_layers=2, bidirectional=True, batch_first=True)), ("gru", dict(bias=False)),
             ("rnn", {}), ("rnn", dict(nonlinearity="relu", num_layers=2, bidirectional=True))]
TORCH_RECURRENT = {"lstm": T.LSTM, "gru": T.GRU, "rnn": T.RNN}


def _states(kind, config, batch, seed=1):
    layers = config["num_layers"] * (2 if config["bidirectional"] else 1)
    h0 = rng(seed).standard_normal((layers, batch, config["proj_size"] or config["hidden_size"]))
    c0 = rng(seed + 1).standard_normal((layers, batch, config["hidden_size"]))
    return (h0, c0) if kind == "lstm" else h0


@pytest.mark.parametrize("kind,settings", RECURRENT, ids=[f"{k}-{s}" for k, s in RECURRENT])
def test_recurrent_replays_reproduce_torch(kind, settings):
    """Default and given initial states, unbatched input; LSTM states also passed flat (h0, c0)."""
    torch.manual_seed(0)
    module = TORCH_RECURRENT[kind](4, 5, **settings).double()
    config, weights = torch_config(module), torch_state(module)
    x = rng().standard_normal((3, 6, 4) if config["batch_first"] else (6, 3, 4))
    states = _states(kind, config, 3)
    unbatched = x[0] if config["batch_first"] else x[:, 0]
    cases = [([x], [x]), ([x, states], [x, states]),
             ([unbatched], [unbatched])] + ([([x, states], [x, *states])] if kind == "lstm" else [])
    for torch_args, replay_args in cases:
        expected = run_torch(module, torch_args)
        assert_reproduces(expected, SEQUENCE_COMPUTE[kind](replay_args, {}, weights, config, False))


def _attention_kwargs(case, n, length, source):
    r = rng(3)
    causal = np.triu(np.ones((length, source), bool), 1)
    padding = np.zeros((n, source), bool)
    padding[1, -2:] = True
    return {"plain": {}, "per-head weights": dict(average_attn_weights=False), "no weights": dict(need_weights=False),
            "bool masks": dict(attn_mask=causal, key_padding_mask=padding),
            "float masks": dict(attn_mask=r.standard_normal((length, source)),
                                key_padding_mask=r.standard_normal((n, source))),
            "3-d float mask": dict(attn_mask=r.standard_normal((n * HEADS, length, source))),
            "causal": dict(attn_mask=causal, is_causal=True, need_weights=False),
            "blocked row": dict(attn_mask=np.vstack([causal[:-1], np.ones((1, source), bool)]),
                                need_weights=False)}[case]


MHA_SETTINGS = [{}, dict(batch_first=True), dict(bias=False), dict(kdim=3, vdim=5, batch_first=True)]
MHA_CALLS = ["plain", "per-head weights", "no weights", "bool masks", "float masks", "3-d float mask", "causal",
             "blocked row"]


@pytest.mark.parametrize("settings", MHA_SETTINGS, ids=str)
def test_mha_replay_reproduces_torch(settings):
    """Self-attention (query = key = value, 5 positions) and cross-attention (5 queries, 4 keys); a row blocked
    at every key gives zeros on torch's need_weights=False path."""
    torch.manual_seed(0)
    module = T.MultiheadAttention(E, HEADS, **settings).double()
    config, weights = torch_config(module), torch_state(module)
    first = config["batch_first"]
    shape = lambda length, dim: (3, length, dim) if first else (length, 3, dim)
    q = rng(1).standard_normal(shape(5, E))
    k, v = rng(2).standard_normal(shape(4, config["kdim"])), rng(3).standard_normal(shape(4, config["vdim"]))
    for case in MHA_CALLS:
        self_attention = case in ("causal", "blocked row") or config["kdim"] != E
        args = [q, q, q] if self_attention and config["kdim"] == E else [q, k, v]
        kwargs = _attention_kwargs(case, 3, 5, args[1].shape[1 if first else 0])
        assert_reproduces(run_torch(module, args, kwargs),
                          SEQUENCE_COMPUTE["mha"](args, kwargs, weights, config, False))
    unbatched = [a[0] if first else a[:, 0] for a in (q, k, v)]
    kwargs = dict(key_padding_mask=np.array([False, False, True, False]))
    assert_reproduces(run_torch(module, unbatched, kwargs),
                      SEQUENCE_COMPUTE["mha"](unbatched, kwargs, weights, config, False))


def test_mha_refuses_what_it_does_not_replay():
    module = T.MultiheadAttention(E, HEADS, add_bias_kv=True).double()
    x = rng().standard_normal((5, 3, E))
    with pytest.raises(ValueError, match="add_bias_kv"):
        SEQUENCE_COMPUTE["mha"]([x, x, x], {}, torch_state(module), torch_config(module), False)
    module = T.MultiheadAttention(E, HEADS, dropout=0.1).double()
    with pytest.raises(ValueError, match="dropout"):
        SEQUENCE_COMPUTE["mha"]([x, x, x], {}, torch_state(module), torch_config(module), True)


TRANSFORMER_SETTINGS = [{}, dict(batch_first=True), dict(norm_first=True), dict(activation="gelu", layer_norm_eps=1e-3),
                        dict(activation=T.GELU(approximate="tanh"), norm_first=True, batch_first=True),
                        dict(activation=functools.partial(T.functional.gelu, approximate="tanh"))]


@pytest.mark.parametrize("settings", TRANSFORMER_SETTINGS, ids=str)
def test_transformer_layer_replays_reproduce_torch(settings):
    torch.manual_seed(0)
    encoder = T.TransformerEncoderLayer(E, HEADS, 16, dropout=0.0, **settings).double()
    decoder = T.TransformerDecoderLayer(E, HEADS, 16, dropout=0.0, **settings).double()
    config = torch_config(encoder)
    assert config == torch_config(decoder)
    first = config["batch_first"]
    x = rng(1).standard_normal((3, 5, E) if first else (5, 3, E))
    memory = rng(2).standard_normal((3, 4, E) if first else (4, 3, E))
    causal, padding, memory_padding = np.triu(np.ones((5, 5), bool), 1), np.zeros((3, 5), bool), np.zeros((3, 4), bool)
    padding[0, 3:], memory_padding[2, 1] = True, True
    for kwargs in ({}, dict(src_mask=causal, src_key_padding_mask=padding), dict(src_mask=causal, is_causal=True),
                   dict(src_mask=rng(4).standard_normal((5, 5)))):
        expected = run_torch(encoder, [x], kwargs)
        assert_reproduces(expected, SEQUENCE_COMPUTE["transformer_encoder_layer"]([x], kwargs, torch_state(encoder),
                                                                                   config, False))
    for kwargs in ({}, dict(tgt_mask=causal, tgt_key_padding_mask=padding, memory_key_padding_mask=memory_padding,
                            tgt_is_causal=True), dict(tgt_mask=causal, memory_mask=rng(5).standard_normal((5, 4)))):
        expected = run_torch(decoder, [x, memory], kwargs)
        assert_reproduces(expected, SEQUENCE_COMPUTE["transformer_decoder_layer"]([x, memory], kwargs,
                                                                                   torch_state(decoder), config, False))
    unbatched = x[0] if first else x[:, 0]
    assert_reproduces(run_torch(encoder, [unbatched]),
                      SEQUENCE_COMPUTE["transformer_encoder_layer"]([unbatched], {}, torch_state(encoder), config,
                                                                    False))


@pytest.mark.parametrize("settings", [{}, dict(padding_idx=1), dict(padding_idx=-1), dict(max_norm=1.0)], ids=str)
def test_embedding_replay_reproduces_torch(settings):
    module = randomize_torch(T.Embedding(6, 3, **settings).double())
    ids = np.array([[0, 1, 5], [1, 2, 5]])
    weights = torch_state(module)   # before the call: max_norm renormalises torch's rows in place
    assert_reproduces(run_torch(module, [ids]),
                      SEQUENCE_COMPUTE["embedding"]([ids], {}, weights, torch_config(module), False))


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("settings", [{}, dict(affine=True), dict(affine=True, track_running_stats=True, eps=1e-3)],
                         ids=str)
def test_instancenorm_replays_reproduce_torch(dims, settings):
    cls = {1: T.InstanceNorm1d, 2: T.InstanceNorm2d, 3: T.InstanceNorm3d}[dims]
    module = randomize_torch(cls(3, **settings).double())
    x = rng().standard_normal((2, 3) + (4,) * dims)
    kind = f"instancenorm{dims}d"
    for train in (False, True):
        weights, config = torch_state(module), torch_config(module)   # train mode updates the running statistics
        for args in ([x], [x[0]]):
            assert_reproduces(run_torch(module, args, train=train),
                              SEQUENCE_COMPUTE[kind](args, {}, weights, config, train))


# ---------------------------------------------------------------------------------------------
# The same replays, given paddle's tensors in torch's layout and paddle's settings, reproduce paddle's layers

PADDLE_RECURRENT = [("lstm", {}), ("lstm", dict(num_layers=2, direction="bidirect")), ("lstm", dict(time_major=True)),
                    ("lstm", dict(proj_size=3, num_layers=2, direction="bidirect")),
                    ("gru", dict(num_layers=2, time_major=True)), ("gru", dict(direction="bidirect")),
                    ("rnn", dict(activation="relu", num_layers=2))]
PADDLE_RECURRENT_CLASSES = {"lstm": P.LSTM, "gru": P.GRU, "rnn": P.SimpleRNN}


@pytest.mark.parametrize("kind,settings", PADDLE_RECURRENT, ids=[f"{k}-{s}" for k, s in PADDLE_RECURRENT])
def test_recurrent_replays_reproduce_paddle(kind, settings):
    """paddle keeps torch's gate order (LSTM i,f,g,o; GRU r,z,n) and GRU formula: with its cells' tensors under
    torch's names (weight_ho transposed into weight_hr), the torch replay reproduces it in float64."""
    paddle.seed(0)
    layer = float64_layer(PADDLE_RECURRENT_CLASSES[kind], 4, 5, **settings)
    config = paddle_config(layer)
    weights = canonical(kind, layer, config)
    x = rng().standard_normal((3, 6, 4) if config["batch_first"] else (6, 3, 4))
    states = _states(kind, config, 3)
    for args in ([x], [x, states]):
        assert_reproduces(run_paddle(layer, args), SEQUENCE_COMPUTE[kind](args, {}, weights, config, False))


def test_paddle_recurrent_state_dict_facts():
    """paddle lists every RNN tensor twice (torch-style flat names and the cells'); with a projection or without
    biases the flat names are shifted, so only the cells' names are safe."""
    layer = P.LSTM(4, 5)
    state = layer.state_dict()
    assert np.array_equal(state["weight_ih_l0"].numpy(), state["0.cell.weight_ih"].numpy())
    assert tuple(P.LSTM(4, 5, direction="bidirect").state_dict()["0.cell_bw.weight_hh"].shape) == (20, 5)
    shapes = {k: tuple(v.shape) for k, v in P.LSTM(4, 5, num_layers=2, proj_size=3).state_dict().items()}
    assert shapes["0.cell.weight_ho"] == (5, 3)                      # torch weight_hr_l0: (3, 5)
    assert shapes["weight_ih_l1"] == (5, 3) and shapes["1.cell.weight_ih"] == (20, 3)   # shifted by weight_ho
    shifted = P.LSTM(4, 5, num_layers=2, proj_size=3)
    state = shifted.state_dict()
    assert np.array_equal(state["weight_hh_l1"].numpy(), state["1.cell.weight_ih"].numpy())
    assert T.LSTM(4, 5).batch_first is False and P.LSTM(4, 5).time_major is False


def _paddle_attention_kwargs(case, n, length, source):
    keep = ~np.triu(np.ones((length, source), bool), 1)
    padding = np.ones((n, 1, 1, source), bool)
    padding[1, ..., -2:] = False
    return {"plain": {}, "keep mask": dict(attn_mask=keep), "padding keep mask": dict(attn_mask=padding & keep),
            "float mask": dict(attn_mask=rng(4).standard_normal((n, HEADS, length, source)))}[case]


@pytest.mark.parametrize("settings", [{}, dict(kdim=3, vdim=5), dict(bias_attr=False), dict(need_weights=True)],
                         ids=str)
def test_mha_replay_reproduces_paddle(settings):
    """paddle.nn.MultiHeadAttention: batch first, a boolean mask's True keeps, (mask - 1) * 1e9 for a blocked
    position, per-head weights [N, H, L, S] when built with need_weights=True."""
    paddle.seed(0)
    layer = float64_layer(P.MultiHeadAttention, E, HEADS, **settings)
    config = paddle_config(layer)
    assert config["mask_blocks"] is False and config["batch_first"] is True
    weights = canonical("mha", layer, config)
    q = rng(1).standard_normal((3, 5, E))
    k, v = rng(2).standard_normal((3, 4, config["kdim"])), rng(3).standard_normal((3, 4, config["vdim"]))
    per_head = dict(need_weights=config["need_weights"], average_attn_weights=False)
    for case in ("plain", "keep mask", "padding keep mask", "float mask"):
        kwargs = _paddle_attention_kwargs(case, 3, 5, 4)
        expected = run_paddle(layer, [q, k, v], kwargs)
        assert_reproduces(expected, SEQUENCE_COMPUTE["mha"]([q, k, v], {**kwargs, **per_head}, weights, config, False))


def test_compat_mha_is_torch_style():
    """paddle.compat.nn.MultiheadAttention: torch's names, packed layout, mask polarity and seq-first default;
    its settings are torch's."""
    compat = paddle.compat.nn.MultiheadAttention
    torch.manual_seed(0)
    module = T.MultiheadAttention(E, HEADS).double()
    layer = float64_layer(compat, E, HEADS)
    for name, value in layer.state_dict().items():
        value.set_value(torch_state(module)[name])
    assert paddle_config(layer) == torch_config(module)
    q, k = rng(1).standard_normal((5, 3, E)), rng(2).standard_normal((4, 3, E))
    kwargs = _attention_kwargs("bool masks", 3, 5, 4)
    expected = run_paddle(layer, [q, k, k], kwargs)
    config = paddle_config(layer)
    weights = canonical("mha", layer, config)
    assert_reproduces(expected, SEQUENCE_COMPUTE["mha"]([q, k, k], kwargs, weights, config, False))
    assert_reproduces(expected, run_torch(module, [q, k, k], kwargs))


PADDLE_TRANSFORMER = [{}, dict(normalize_before=True), dict(activation="gelu", layer_norm_eps=1e-6),
                      dict(bias_attr=False)]


@pytest.mark.parametrize("settings", PADDLE_TRANSFORMER, ids=str)
def test_transformer_layer_replays_reproduce_paddle(settings):
    """paddle's Transformer layers: self_attn / cross_attn (torch multihead_attn), linear1/linear2 [in, out],
    norm1..3; batch first; 'gelu' is the exact GELU."""
    paddle.seed(0)
    encoder = float64_layer(P.TransformerEncoderLayer, E, HEADS, 16, dropout=0.0, **settings)
    decoder = float64_layer(P.TransformerDecoderLayer, E, HEADS, 16, dropout=0.0, **settings)
    config = paddle_config(encoder)
    assert config == paddle_config(decoder)
    x, memory = rng(1).standard_normal((3, 5, E)), rng(2).standard_normal((3, 4, E))
    keep = ~np.triu(np.ones((5, 5), bool), 1)
    for kwargs in ({}, dict(src_mask=keep)):
        expected = run_paddle(encoder, [x], kwargs)
        assert_reproduces(expected, SEQUENCE_COMPUTE["transformer_encoder_layer"](
            [x], kwargs, canonical("transformer_encoder_layer", encoder, config), config, False))
    kwargs = dict(tgt_mask=keep, memory_mask=rng(3).standard_normal((5, 4)))
    expected = run_paddle(decoder, [x, memory], kwargs)
    assert_reproduces(expected, SEQUENCE_COMPUTE["transformer_decoder_layer"](
        [x, memory], kwargs, canonical("transformer_decoder_layer", decoder, config), config, False))


def test_embedding_and_instancenorm_replays_reproduce_paddle():
    """paddle Embedding(padding_idx) returns zeros for that id whatever the row holds (negative ids count from
    the end); InstanceNorm2D has scale (1) and bias (0), no running statistics, instance statistics in eval."""
    for padding_idx in (1, -1):
        layer = float64_layer(P.Embedding, 6, 3, padding_idx=padding_idx)
        layer.weight.set_value(rng().standard_normal((6, 3)))
        ids = np.array([[0, 1, 5], [1, 2, 5]])
        config = paddle_config(layer)
        assert config["zero_padding_output"] is True and config["padding_idx"] == padding_idx % 6
        weights = canonical("embedding", layer, config)
        assert_reproduces(run_paddle(layer, [ids]), SEQUENCE_COMPUTE["embedding"]([ids], {}, weights, config, False))
    for settings in ({}, dict(weight_attr=False, bias_attr=False)):
        layer = float64_layer(P.InstanceNorm2D, 3, **settings)
        assert not [n for n, _ in layer.named_buffers()]
        config = paddle_config(layer)
        x = rng().standard_normal((2, 3, 4, 4))
        for train in (False, True):
            assert_reproduces(run_paddle(layer, [x], train=train), SEQUENCE_COMPUTE["instancenorm2d"](
                [x], {}, canonical("instancenorm2d", layer, config), config, train))


# ---------------------------------------------------------------------------------------------
# Every convention, broken on purpose, is proven by exactly its flip


class ResetBeforeGRU(P.GRU):
    """A hand-written GRU of the other formulation, n = tanh(W_in x + b_in + W_hn (r * h) + b_hn), from
    paddle.nn.GRU's own (torch-layout) weights; batch first, one layer."""

    def forward(self, x):
        cell = self[0].cell
        hidden = cell.weight_hh.shape[1]
        h = paddle.zeros([x.shape[0], hidden], dtype=x.dtype)
        outs = []
        for t in range(x.shape[1]):
            gi = paddle.matmul(x[:, t], cell.weight_ih, transpose_y=True) + cell.bias_ih
            gh = paddle.matmul(h, cell.weight_hh[:2 * hidden], transpose_y=True) + cell.bias_hh[:2 * hidden]
            r = PF.sigmoid(gi[:, :hidden] + gh[:, :hidden])
            z = PF.sigmoid(gi[:, hidden:2 * hidden] + gh[:, hidden:])
            n = paddle.tanh(gi[:, 2 * hidden:] + paddle.matmul(r * h, cell.weight_hh[2 * hidden:], transpose_y=True)
                            + cell.bias_hh[2 * hidden:])
            h = (1 - z) * n + z * h
            outs.append(h)
        return paddle.stack(outs, axis=1), h.unsqueeze(0)


class RescaledAttention(P.MultiHeadAttention):
    """paddle's attention with q multiplied by `factor` on top of its own head_dim**-0.5."""

    def __init__(self, *args, factor=1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.factor = factor

    def _prepare_qkv(self, query, key, value, cache=None):
        q, k, v = super()._prepare_qkv(query, key, value, cache)
        return q * self.factor, k, v


def proven(kind, args, kwargs, weights, t_config, p_config, torch_out, broken_out, tol=TOL):
    """What the diagnosis will do: None when the replay with torch's settings misses torch's outputs, else
    [(key, value)] of the single flips whose replay reproduces the broken module's outputs (the leaves both
    return)."""
    def reproduces(reference, config):
        try:
            replayed = SEQUENCE_COMPUTE[kind](args, kwargs, weights, config, False)
        except ValueError:   # the flip makes the call inconsistent (a [L, S] mask once batch and seq swap)
            return False
        return all(close(a, b, *tol) for a, b in zip(reference, replayed))

    if not reproduces(torch_out, t_config):
        return None
    found = []
    for convention in SEQUENCE_CONVENTIONS:
        if kind not in convention.kinds:
            continue
        values = convention.values(t_config, p_config)
        current = t_config.get(convention.key, values[0])
        found += [(convention.key, value) for value in values
                  if value != current and reproduces(broken_out, {**t_config, convention.key: value})]
    return found


def _attention_pair(broken, **settings):
    torch.manual_seed(0)
    module = T.MultiheadAttention(E, HEADS, batch_first=True, **settings).double()
    with paddle_float64():
        layer = paddle_from_torch("mha", broken(), module)
    return module, layer


def case_mask_polarity():
    """torch's causal mask (True = blocked) handed to paddle's MultiHeadAttention as it is."""
    module, layer = _attention_pair(lambda: P.MultiHeadAttention(E, HEADS))
    x, mask = rng(1).standard_normal((2, 5, E)), np.triu(np.ones((5, 5), bool), 1)
    kwargs = dict(attn_mask=mask, need_weights=False)
    return "mha", module, layer, [x, x, x], kwargs, run_paddle(layer, [x, x, x], dict(attn_mask=mask))


def case_mask_polarity_transformer():
    """The same in a GPT-style block: torch's causal src_mask passed as it is to paddle's encoder layer."""
    torch.manual_seed(0)
    module = T.TransformerEncoderLayer(E, HEADS, 16, dropout=0.0, batch_first=True).double()
    with paddle_float64():
        layer = paddle_from_torch("transformer_encoder_layer", P.TransformerEncoderLayer(E, HEADS, 16, dropout=0.0),
                                  module)
    x, mask = rng(1).standard_normal((2, 5, E)), np.triu(np.ones((5, 5), bool), 1)
    kwargs = dict(src_mask=mask)
    return "transformer_encoder_layer", module, layer, [x], kwargs, run_paddle(layer, [x], kwargs)


def case_batch_first_lstm():
    """A seq-first [6, 3, 4] batch given to paddle's LSTM (time_major=False) as it is."""
    torch.manual_seed(0)
    module = T.LSTM(4, 5).double()
    with paddle_float64():
        layer = paddle_from_torch("lstm", P.LSTM(4, 5), module)
    x = rng(1).standard_normal((6, 3, 4))
    return "lstm", module, layer, [x], {}, run_paddle(layer, [x])


def case_batch_first_transformer():
    """A seq-first [5, 3, 8] batch given to paddle's (always batch-first) encoder layer."""
    torch.manual_seed(0)
    module = T.TransformerEncoderLayer(E, HEADS, 16, dropout=0.0).double()
    with paddle_float64():
        layer = paddle_from_torch("transformer_encoder_layer", P.TransformerEncoderLayer(E, HEADS, 16, dropout=0.0),
                                  module)
    x = rng(1).standard_normal((5, 3, E))
    return "transformer_encoder_layer", module, layer, [x], {}, run_paddle(layer, [x])


def case_projection_layout():
    """torch's weight_hr [3, 5] reshaped (not transposed) into paddle's weight_ho [5, 3]."""
    torch.manual_seed(0)
    module = T.LSTM(4, 5, proj_size=3, batch_first=True).double()
    with paddle_float64():
        layer = paddle_from_torch("lstm", P.LSTM(4, 5, proj_size=3), module)
    layer.state_dict()["0.cell.weight_ho"].set_value(torch_state(module)["weight_hr_l0"].reshape(5, 3))
    x = rng(1).standard_normal((3, 6, 4))
    return "lstm", module, layer, [x], {}, run_paddle(layer, [x])


def case_gru_formulation():
    torch.manual_seed(0)
    module = T.GRU(4, 5, batch_first=True).double()
    with paddle_float64():
        layer = paddle_from_torch("gru", ResetBeforeGRU(4, 5), module)
    x = rng(1).standard_normal((3, 6, 4))
    return "gru", module, layer, [x], {}, run_paddle(layer, [x])


def case_rnn_nonlinearity():
    """torch's default tanh RNN ported to a paddle SimpleRNN with activation='relu'."""
    torch.manual_seed(0)
    module = T.RNN(4, 5, batch_first=True).double()
    with paddle_float64():
        layer = paddle_from_torch("rnn", P.SimpleRNN(4, 5, activation="relu"), module)
    x = rng(1).standard_normal((3, 6, 4))
    return "rnn", module, layer, [x], {}, run_paddle(layer, [x])


def _case_scaling(factor):
    module, layer = _attention_pair(lambda: RescaledAttention(E, HEADS, factor=factor))
    q, k = rng(1).standard_normal((2, 5, E)), rng(2).standard_normal((2, 4, E))
    return "mha", module, layer, [q, k, k], dict(need_weights=False), run_paddle(layer, [q, k, k])


def _transformer_pair(torch_settings=None, paddle_settings=None, activation=None):
    torch.manual_seed(0)
    module = T.TransformerEncoderLayer(E, HEADS, 16, dropout=0.0, batch_first=True, **(torch_settings or {})).double()
    with paddle_float64():
        layer = paddle_from_torch("transformer_encoder_layer",
                                  P.TransformerEncoderLayer(E, HEADS, 16, dropout=0.0, **(paddle_settings or {})),
                                  module)
    if activation is not None:
        layer.activation = activation
    x = rng(1).standard_normal((2, 5, E))
    return "transformer_encoder_layer", module, layer, [x], {}, run_paddle(layer, [x])


def case_embedding_padding():
    """The same table (row 0 not zero, as after a weight copy) in both; ids hold the padding id 0."""
    module = randomize_torch(T.Embedding(10, 4, padding_idx=0).double())
    with paddle_float64():
        layer = paddle_from_torch("embedding", P.Embedding(10, 4, padding_idx=0), module)
    ids = np.array([[0, 3, 5, 0], [7, 0, 2, 9]])
    return "embedding", module, layer, [ids], {}, run_paddle(layer, [ids])


def case_instancenorm_affine():
    """torch affine=True (trained weight and bias) ported to a paddle InstanceNorm2D without scale and bias."""
    module = randomize_torch(T.InstanceNorm2d(3, affine=True).double())
    layer = float64_layer(P.InstanceNorm2D, 3, weight_attr=False, bias_attr=False)
    x = rng(1).standard_normal((2, 3, 4, 4))
    return "instancenorm2d", module, layer, [x], {}, run_paddle(layer, [x])


def case_instancenorm_running_stats():
    """torch track_running_stats=True in eval (running statistics) vs paddle (instance statistics always)."""
    module = randomize_torch(T.InstanceNorm2d(3, track_running_stats=True).double())
    layer = float64_layer(P.InstanceNorm2D, 3)
    x = rng(1).standard_normal((2, 3, 4, 4))
    return "instancenorm2d", module, layer, [x], {}, run_paddle(layer, [x])


# name: (case, the flip that must be the only one proven)
CONVENTION_CASES = {
    "mask polarity (MultiHeadAttention)": (case_mask_polarity, ("mask_blocks", False)),
    "mask polarity (encoder layer, causal)": (case_mask_polarity_transformer, ("mask_blocks", False)),
    "batch first (LSTM)": (case_batch_first_lstm, ("batch_first", True)),
    "batch first (encoder layer)": (case_batch_first_transformer, ("batch_first", True)),
    "LSTM projection layout": (case_projection_layout, ("proj_layout", "in_out")),
    "GRU formulation": (case_gru_formulation, ("reset_after", False)),
    "simple RNN nonlinearity": (case_rnn_nonlinearity, ("nonlinearity", "relu")),
    "attention scaling: none": (lambda: _case_scaling((E // HEADS) ** 0.5), ("scaling", "none")),
    "attention scaling: 1/sqrt(embed_dim)": (lambda: _case_scaling(((E // HEADS) / E) ** 0.5),
                                             ("scaling", "embed_dim")),
    "LayerNorm epsilon (1e-12)": (lambda: _transformer_pair(paddle_settings=dict(layer_norm_eps=1e-12)),
                                  ("layer_norm_eps", 1e-12)),
    "GELU form (exact vs tanh)": (lambda: _transformer_pair(dict(activation="gelu"), dict(activation="gelu"),
                                                            functools.partial(PF.gelu, approximate=True)),
                                  ("activation", "gelu_tanh")),
    "ReLU vs GELU": (lambda: _transformer_pair(paddle_settings=dict(activation="gelu")), ("activation", "gelu")),
    "norm_first": (lambda: _transformer_pair(paddle_settings=dict(normalize_before=True)), ("norm_first", True)),
    "Embedding padding_idx": (case_embedding_padding, ("zero_padding_output", True)),
    "InstanceNorm affine": (case_instancenorm_affine, ("affine", False)),
    "InstanceNorm running statistics": (case_instancenorm_running_stats, ("track_running_stats", False)),
}


def measure(name):
    """(proven flips, max_abs torch vs broken, max_abs flipped replay vs broken) of one case."""
    case, (key, value) = CONVENTION_CASES[name]
    kind, module, layer, args, kwargs, broken = case()
    t_config, p_config = torch_config(module), paddle_config(layer)
    torch_out, weights = run_torch(module, args, kwargs), torch_state(module)
    flipped = SEQUENCE_COMPUTE[kind](args, kwargs, weights, {**t_config, key: value}, False)
    unflipped = SEQUENCE_COMPUTE[kind](args, kwargs, weights, t_config, False)
    return (proven(kind, args, kwargs, weights, t_config, p_config, torch_out, broken),
            max_abs(torch_out[0], broken[0]), max_abs(flipped[0], broken[0]), max_abs(unflipped[0], broken[0]),
            [a.shape == b.shape for a, b in zip(torch_out, broken)])


@pytest.mark.parametrize("name", list(CONVENTION_CASES))
def test_each_convention_broken_on_purpose_is_proven_by_exactly_its_flip(name):
    found, before, after, unflipped, _ = measure(name)
    assert found == [CONVENTION_CASES[name][1]], found
    assert before > 1e-6 and unflipped > 1e-6   # the broken module differs, and the unflipped replay misses it
    assert after < 1e-9


def test_every_convention_has_a_case_and_states_both_defaults():
    keys = {flip[0] for _, flip in CONVENTION_CASES.values()}
    assert keys == {c.key for c in SEQUENCE_CONVENTIONS}
    for convention in SEQUENCE_CONVENTIONS:
        assert convention.torch and convention.paddle and convention.fix
        assert set(convention.kinds) <= set(SEQUENCE_COMPUTE)


def test_the_defaults_the_conventions_state():
    """Both frameworks' defaults as the Conventions' words say them (torch 2.14.1, paddle 3.3.1)."""
    keys = ("batch_first", "norm_first", "activation", "layer_norm_eps", "dropout")
    encoder = torch_config(T.TransformerEncoderLayer(E, HEADS))
    layer = paddle_config(P.TransformerEncoderLayer(E, HEADS, 16))
    assert [encoder[k] for k in keys] == [False, False, "relu", 1e-5, 0.1]
    assert [layer[k] for k in keys] == [True, False, "relu", 1e-5, 0.1]
    assert paddle_config(P.TransformerEncoderLayer(E, HEADS, 16, activation="gelu"))["activation"] == "gelu"   # exact
    assert torch_config(T.MultiheadAttention(E, HEADS))["mask_blocks"] is True
    assert paddle_config(P.MultiHeadAttention(E, HEADS))["mask_blocks"] is False
    assert (torch_config(T.LSTM(4, 5))["batch_first"], paddle_config(P.LSTM(4, 5))["batch_first"]) == (False, True)
    t_norm, p_norm = torch_config(T.InstanceNorm2d(3)), paddle_config(P.InstanceNorm2D(3))
    assert (t_norm["affine"], t_norm["track_running_stats"], t_norm["eps"]) == (False, False, 1e-5)
    assert (p_norm["affine"], p_norm["track_running_stats"], p_norm["eps"]) == (True, False, 1e-5)
    scale = P.InstanceNorm2D(3).state_dict()
    assert np.array_equal(scale["scale"].numpy(), np.ones(3)) and np.array_equal(scale["bias"].numpy(), np.zeros(3))
    # torch's padding row is zero at initialisation and gets no gradient; paddle returns zeros for it anyway
    embedding = T.Embedding(5, 3, padding_idx=1)
    assert not embedding.weight[1].any()
    embedding(torch.tensor([1, 2])).sum().backward()
    assert not embedding.weight.grad[1].any() and embedding.weight.grad[2].all()


if __name__ == "__main__":   # the README's table: python -m tests.test_sequence_replays
    print("| convention | torch default | paddle default | max_abs before | after the flip |")
    print("|---|---|---|---|---|")
    by_key = {c.key: c for c in SEQUENCE_CONVENTIONS}
    for case_name, (_, (flip_key, _)) in CONVENTION_CASES.items():
        proven_flips, before_gap, after_gap, _, same_shapes = measure(case_name)
        shapes = "" if all(same_shapes) else " (other outputs: shapes differ)"
        print(f"| {case_name} | {by_key[flip_key].torch} | {by_key[flip_key].paddle} | {before_gap:.2g}{shapes} | "
              f"{after_gap:.2g} |  proven: {proven_flips}")
