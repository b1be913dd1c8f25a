"""Model pairs people port today, built from each framework's own classes in this file: Transformer encoders,
LSTM/GRU taggers, causal attention, InstanceNorm, embeddings, paddle's torch-style layers and a model's own
classes. Correct ports pass at the default tolerances; copies broken on purpose fail at the right module
with the cause a replay proves; several independent differences are each named."""
import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("paddle")

import paddle  # noqa: E402
import torch  # noqa: E402
from paddle import nn as pnn  # noqa: E402
from torch import nn as tnn  # noqa: E402

from dualbench import compare_models  # noqa: E402
from tests.conftest import run_main  # noqa: E402

VOCAB = 40
FAST = dict(train_steps=1, float64=False)


def tokens(n=3, length=7, seed=0, pad=None):
    ids = np.random.default_rng(seed).integers(1, VOCAB, (n, length)).astype(np.int64)
    if pad is not None:
        ids[:, -2:] = pad
    return ids


def cause_of(result):
    first = result.first_failure
    assert first is not None, result.summary
    return first


# ---------------------------------------------------------------------------------------------
# Transformer encoders


class TorchEncoder(tnn.Module):
    def __init__(self, d=16, heads=2, norm_first=False, activation="relu"):
        super().__init__()
        self.emb = tnn.Embedding(VOCAB, d)
        layer = tnn.TransformerEncoderLayer(d, heads, 32, dropout=0.1, batch_first=True, norm_first=norm_first,
                                            activation=activation)
        self.enc = tnn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = tnn.Linear(d, VOCAB)

    def forward(self, tokens):
        return self.head(self.enc(self.emb(tokens)))


class PaddleEncoder(pnn.Layer):
    def __init__(self, d=16, heads=2, normalize_before=False, activation="relu"):
        super().__init__()
        self.emb = pnn.Embedding(VOCAB, d)
        layer = pnn.TransformerEncoderLayer(d, heads, 32, dropout=0.1, normalize_before=normalize_before,
                                            activation=activation)
        self.enc = pnn.TransformerEncoder(layer, 2)
        self.head = pnn.Linear(d, VOCAB)

    def forward(self, tokens):
        return self.head(self.enc(self.emb(tokens)))


def test_transformer_encoder_pair_passes_with_the_packed_attention_split_in_three():
    torch.manual_seed(0)
    result = compare_models(TorchEncoder, PaddleEncoder, {"tokens": tokens()}, train_steps=2)
    assert result.passed, result.summary
    packed = {t.torch: t for t in result.mapping.tensors}["enc.layers.0.self_attn.in_proj_weight"]
    assert packed.paddle_parts == tuple(f"enc.layers.0.self_attn.{p}_proj.weight" for p in "qkv")
    assert packed.transform == "transpose+concat:0"
    assert result.mapping.modules[0].evidence[:1] == ["order"] or "name" in result.mapping.modules[0].evidence
    rows = result.rows
    assert {"enc", "enc.layers.0", "enc.layers.1.self_attn", "(output)"} <= set(rows.name)
    assert rows[rows.check == "loss"].status.eq("ok").all()     # ce over the last axis of [N, T, V]
    notes = " ".join(result.notes)
    assert "eval fast path" in notes and "set to 0" in notes and "self_attn (p=0.1)" in notes
    assert rows.dropout.str.contains("set to 0 inside torch enc.layers.0.self_attn").all()   # the rows say so too


@pytest.mark.parametrize("broken, words, module", [
    (dict(normalize_before=True), "LayerNorm before or after the residual blocks", "enc.layers.0"),
    (dict(activation="gelu"), "feed-forward activation inside Transformer layers", "enc.layers.0"),
])
def test_transformer_layer_conventions_are_named_at_the_layer(broken, words, module):
    torch.manual_seed(0)
    result = compare_models(TorchEncoder, lambda: PaddleEncoder(**broken), {"tokens": tokens()}, **FAST)
    first = cause_of(result)
    assert first["name"] == module and first["mode"] == "eval" and first["cause"].startswith(words), first
    also = result.rows[result.rows.cause.fillna("").str.startswith("an independent difference")]
    assert set(also.name) == {"enc.layers.1"}       # the second layer, which differs by itself too
    # in train mode the layer's dropout modules keep the replay from reproducing torch's own output: no cause
    # is claimed there, and the row points to the one eval proved instead of saying none explains it
    train = result.rows[(result.rows["mode"] == "train") & (result.rows.name == module)
                        & (result.rows.status == "FAIL")].iloc[0]
    assert "not diagnosed in train:" in train.cause and f"proved: {words}" in train.cause, train.cause
    assert not result.rows.cause.fillna("").str.startswith("no known convention").any()


def full_transformer(side, **settings):
    sizes = dict(d_model=16, nhead=2, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=32, dropout=0.1)
    return tnn.Transformer(**sizes, batch_first=True) if side == "torch" else pnn.Transformer(**sizes, **settings)


def test_a_whole_transformer_passes_and_each_of_its_layers_is_named_when_all_differ():
    """torch.nn.Transformer against paddle.nn.Transformer, src and tgt bound by name; with paddle's layers
    normalizing first, each of the four layers differs by itself and is named, the stacks follow from them."""
    rng = np.random.default_rng(0)
    inputs = {"src": rng.standard_normal((2, 5, 16)).astype(np.float32),
              "tgt": rng.standard_normal((2, 4, 16)).astype(np.float32)}
    torch.manual_seed(0)
    assert compare_models(lambda: full_transformer("torch"), lambda: full_transformer("paddle"), inputs,
                          **FAST).passed
    torch.manual_seed(0)
    result = compare_models(lambda: full_transformer("torch"),
                            lambda: full_transformer("paddle", normalize_before=True), inputs, **FAST)
    rows = result.rows[(result.rows["mode"] == "eval") & (result.rows.check == "forward")].set_index("name")
    for layer in ("encoder.layers.0", "encoder.layers.1", "decoder.layers.0", "decoder.layers.1"):
        assert "LayerNorm before or after the residual blocks" in rows.loc[layer, "cause"], rows.loc[layer, "cause"]
    assert rows.loc["decoder", "cause"] == "follows from its part decoder.layers.0"
    assert rows.loc["decoder.layers.1.self_attn", "cause"].startswith("follows from forward/eval decoder.layers.1")


# ---------------------------------------------------------------------------------------------
# Recurrent taggers: token ids in, [N, T, V] out


class TorchTagger(tnn.Module):
    def __init__(self, cell="lstm", bidirectional=False, proj=0, batch_first=True):
        super().__init__()
        self.emb = tnn.Embedding(VOCAB, 6)
        kwargs = dict(num_layers=2, batch_first=batch_first, bidirectional=bidirectional)
        self.rnn = (tnn.LSTM(6, 8, proj_size=proj, **kwargs) if cell == "lstm" else
                    tnn.GRU(6, 8, **kwargs) if cell == "gru" else tnn.RNN(6, 8, **kwargs))
        self.head = tnn.Linear((proj or 8) * (2 if bidirectional else 1), VOCAB)

    def forward(self, tokens):
        out, _ = self.rnn(self.emb(tokens))
        return self.head(out)


class PaddleTagger(pnn.Layer):
    def __init__(self, cell="lstm", bidirectional=False, proj=0, time_major=False, activation="tanh"):
        super().__init__()
        self.emb = pnn.Embedding(VOCAB, 6)
        kwargs = dict(num_layers=2, direction="bidirect" if bidirectional else "forward", time_major=time_major)
        self.rnn = (pnn.LSTM(6, 8, proj_size=proj, **kwargs) if cell == "lstm" else
                    pnn.GRU(6, 8, **kwargs) if cell == "gru" else pnn.SimpleRNN(6, 8, activation=activation, **kwargs))
        self.head = pnn.Linear((proj or 8) * (2 if bidirectional else 1), VOCAB)

    def forward(self, tokens):
        out, _ = self.rnn(self.emb(tokens))
        return self.head(out)


@pytest.mark.parametrize("options", [dict(cell="lstm"), dict(cell="gru", bidirectional=True),
                                     dict(cell="lstm", bidirectional=True, proj=3),
                                     dict(cell="rnn", bidirectional=True)])
def test_recurrent_taggers_pass(options):
    torch.manual_seed(1)
    result = compare_models(lambda: TorchTagger(**options), lambda: PaddleTagger(**options), {"tokens": tokens()},
                            train_steps=2)
    assert result.passed, result.summary
    names = {t.torch: t for t in result.mapping.tensors}
    assert names["rnn.weight_ih_l1"].paddle == ("rnn.1.cell_fw.weight_ih" if options.get("bidirectional") else
                                                "rnn.1.cell.weight_ih")      # paddle's cells, not its flat names
    if options.get("proj"):
        assert names["rnn.weight_hr_l0"].transform == "transpose"
    # the integer ids reached both embeddings as ids
    assert (result.rows[result.rows.name == "emb"].status == "ok").all()


def test_simple_rnn_with_another_nonlinearity_is_named():
    torch.manual_seed(1)
    result = compare_models(lambda: TorchTagger(cell="rnn"), lambda: PaddleTagger(cell="rnn", activation="relu"),
                            {"tokens": tokens()}, **FAST)
    first = cause_of(result)
    assert first["name"] == "rnn" and first["cause"].startswith("simple RNN nonlinearity"), first


def test_sequence_first_against_batch_first_is_named():
    torch.manual_seed(2)
    x = np.random.default_rng(0).standard_normal((3, 5, 6)).astype(np.float32)

    class TorchRNN(tnn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = tnn.LSTM(6, 8, batch_first=True)

        def forward(self, x):
            return self.rnn(x)[0]

    class PaddleRNN(pnn.Layer):
        def __init__(self):
            super().__init__()
            self.rnn = pnn.LSTM(6, 8, time_major=True)     # the port reads [N, T, F] as [T, N, F]

        def forward(self, x):
            return self.rnn(x)[0]

    first = cause_of(compare_models(TorchRNN, PaddleRNN, x, loss="sum", **FAST))
    assert first["name"] == "rnn" and first["cause"].startswith("batch-first vs sequence-first axes")


# ---------------------------------------------------------------------------------------------
# Causal attention: the boolean mask's polarity


class TorchCausal(tnn.Module):
    def __init__(self):
        super().__init__()
        self.emb = tnn.Embedding(VOCAB, 8)
        self.attn = tnn.MultiheadAttention(8, 2, batch_first=True)
        self.norm = tnn.LayerNorm(8)
        self.head = tnn.Linear(8, VOCAB)

    def forward(self, tokens):
        x = self.emb(tokens)
        blocked = torch.triu(torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool), 1)  # True: may not attend
        a, _ = self.attn(x, x, x, attn_mask=blocked, need_weights=False)
        return self.head(self.norm(x + a))


class PaddleCausal(pnn.Layer):
    def __init__(self, mask_as_in_torch=False):
        super().__init__()
        self.emb = pnn.Embedding(VOCAB, 8)
        self.attn = pnn.MultiHeadAttention(8, 2)
        self.norm = pnn.LayerNorm(8)
        self.head = pnn.Linear(8, VOCAB)
        self.mask_as_in_torch = mask_as_in_torch

    def forward(self, tokens):
        x = self.emb(tokens)
        ones = paddle.ones([tokens.shape[1], tokens.shape[1]])
        keep = (paddle.triu(ones, 1) if self.mask_as_in_torch else paddle.tril(ones)).astype("bool")  # True: may attend
        return self.head(self.norm(x + self.attn(x, x, x, attn_mask=keep)))


def test_causal_attention_passes_with_the_mask_inverted_and_fails_with_it_as_is():
    torch.manual_seed(3)
    assert compare_models(TorchCausal, PaddleCausal, {"tokens": tokens()}, **FAST).passed
    first = cause_of(compare_models(TorchCausal, lambda: PaddleCausal(mask_as_in_torch=True), {"tokens": tokens()},
                                    **FAST))
    assert first["name"] == "attn" and first["cause"].startswith("boolean attention-mask polarity"), first
    assert "mask_blocks=False" in first["cause"]


class TorchBlock(tnn.Module):
    """A GPT-style block: a pre-norm encoder layer under a causal mask."""

    def __init__(self):
        super().__init__()
        self.emb = tnn.Embedding(VOCAB, 8)
        self.block = tnn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=True)
        self.head = tnn.Linear(8, VOCAB)

    def forward(self, tokens):
        blocked = torch.triu(torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool), 1)
        return self.head(self.block(self.emb(tokens), src_mask=blocked))


class PaddleBlock(pnn.Layer):
    def __init__(self):
        super().__init__()
        self.emb = pnn.Embedding(VOCAB, 8)
        self.block = pnn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, normalize_before=True)
        self.head = pnn.Linear(8, VOCAB)

    def forward(self, tokens):
        blocked = paddle.triu(paddle.ones([tokens.shape[1], tokens.shape[1]]), 1).astype("bool")  # torch's, as is
        return self.head(self.block(self.emb(tokens), src_mask=blocked))


def test_a_mask_ported_as_is_into_a_transformer_layer_is_named_at_the_layer_and_nowhere_else():
    """The layer converts the mask and passes it to its attention: the attention, fed torch's input with
    that mask, differs alone too, but by no convention of its own: it follows from the layer."""
    torch.manual_seed(3)
    result = compare_models(TorchBlock, PaddleBlock, {"tokens": tokens()}, **FAST)
    first = cause_of(result)
    assert first["name"] == "block" and first["cause"].startswith("boolean attention-mask polarity"), first
    attention = result.rows[(result.rows["mode"] == "eval") & (result.rows.name == "block.self_attn")].iloc[0]
    assert attention.cause.startswith("follows from forward/eval block (inside it"), attention.cause
    assert not result.rows.cause.fillna("").str.startswith("an independent difference").any()


def test_attention_weights_only_torch_returns_are_listed_not_failed():
    torch.manual_seed(4)

    class TorchAttn(tnn.Module):
        def __init__(self):
            super().__init__()
            self.attn = tnn.MultiheadAttention(8, 2, batch_first=True)   # returns (output, weights)

        def forward(self, x):
            return self.attn(x, x, x)[0]

    class PaddleAttn(pnn.Layer):
        def __init__(self):
            super().__init__()
            self.attn = pnn.MultiHeadAttention(8, 2)                       # returns the output only

        def forward(self, x):
            return self.attn(x, x, x)

    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    result = compare_models(TorchAttn, PaddleAttn, x, loss="sum", **FAST)
    assert result.passed, result.summary
    listed = result.rows[result.rows.name == "attn[1]"]
    assert len(listed) and (listed.status == "expected").all() and listed.cause.str.contains("only torch").all()


# ---------------------------------------------------------------------------------------------
# InstanceNorm, Embedding padding, torch-style paddle layers, a model's own classes


class TorchIN(tnn.Module):
    def __init__(self):
        super().__init__()
        self.conv = tnn.Conv2d(3, 4, 3, padding=1)
        self.norm = tnn.InstanceNorm2d(4)       # affine=False, track_running_stats=False
        self.fc = tnn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        return self.fc(self.norm(self.conv(x)).flatten(1))


class PaddleIN(pnn.Layer):
    def __init__(self, like_torch):
        super().__init__()
        self.conv = pnn.Conv2D(3, 4, 3, padding=1)
        self.norm = pnn.InstanceNorm2D(4, weight_attr=False, bias_attr=False) if like_torch else pnn.InstanceNorm2D(4)
        self.fc = pnn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        return self.fc(self.norm(self.conv(x)).flatten(1))


def test_instance_norm_with_each_frameworks_defaults_fails_and_the_matching_port_passes():
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    torch.manual_seed(5)
    result = compare_models(TorchIN, lambda: PaddleIN(like_torch=False), x, **FAST)
    first = cause_of(result)
    assert first["name"] == "norm" and first["cause"].startswith("InstanceNorm affine"), first
    assert any("holds scale, bias" in note for note in result.notes)
    assert compare_models(TorchIN, lambda: PaddleIN(like_torch=True), x, **FAST).passed


def test_embedding_padding_idx_row_is_named():
    class TorchEmb(tnn.Module):
        def __init__(self):
            super().__init__()
            self.emb = tnn.Embedding(VOCAB, 4, padding_idx=0)
            self.fc = tnn.Linear(4, 3)

        def forward(self, tokens):
            return self.fc(self.emb(tokens)).mean(1)

    class PaddleEmb(pnn.Layer):
        def __init__(self):
            super().__init__()
            self.emb = pnn.Embedding(VOCAB, 4, padding_idx=0)
            self.fc = pnn.Linear(4, 3)

        def forward(self, tokens):
            return self.fc(self.emb(tokens)).mean(1)

    # trained weights: the padding row is no longer zero (random canonical weights stand for them)
    result = compare_models(TorchEmb, PaddleEmb, {"tokens": tokens(pad=0)}, weights="random", **FAST)
    first = cause_of(result)
    assert first["name"] == "emb" and first["cause"].startswith("Embedding padding_idx output"), first


class TorchSquare(tnn.Module):
    def __init__(self):
        super().__init__()
        self.a = tnn.Linear(6, 6)
        self.b = tnn.Linear(6, 3)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def paddle_square(compat):
    layer = paddle.compat.nn.Linear if compat else pnn.Linear
    model = pnn.Sequential(layer(6, 6), pnn.Tanh(), pnn.Linear(6, 3))
    return model


@pytest.mark.parametrize("compat, transform", [(True, "none"), (False, "transpose")])
def test_a_square_weight_is_oriented_by_replay(compat, transform):
    """paddle.compat.nn.Linear keeps torch's [out, in], paddle.nn.Linear is [in, out]: a 6x6 weight's shape
    cannot tell them apart; replaying both orientations on torch's input does."""
    torch.manual_seed(6)
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    result = compare_models(TorchSquare, lambda: paddle_square(compat), x, **FAST)
    assert result.passed, result.summary
    square = {t.torch: t for t in result.mapping.tensors}["a.weight"]
    assert square.transform == transform
    module = next(m for m in result.mapping.modules if m.torch == "a")
    assert "replay" in module.evidence


class TorchRMSNorm(tnn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = tnn.Parameter(torch.rand(dim) + 0.5)

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class PaddleLlamaRMSNorm(pnn.Layer):        # another class name, another tensor name
    def __init__(self, dim):
        super().__init__()
        self.scale = self.create_parameter([dim], default_initializer=pnn.initializer.Constant(1.0))

    def forward(self, x):
        return x * paddle.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.scale


class PaddleTiedHead(pnn.Layer):             # an LM head kept as [vocab, hidden], used as x @ W^T
    def __init__(self, hidden, vocab):
        super().__init__()
        self.weight = self.create_parameter([vocab, hidden])

    def forward(self, x):
        return paddle.matmul(x, self.weight, transpose_y=True)


class TorchLM(tnn.Module):
    def __init__(self):
        super().__init__()
        self.emb = tnn.Embedding(VOCAB, 8)
        self.norm = TorchRMSNorm(8)
        self.lm_head = tnn.Linear(8, VOCAB, bias=False)

    def forward(self, tokens):
        return self.lm_head(self.norm(self.emb(tokens)))


class PaddleLM(pnn.Layer):
    def __init__(self):
        super().__init__()
        self.embed_tokens = pnn.Embedding(VOCAB, 8)
        self.final_norm = PaddleLlamaRMSNorm(8)
        self.output = PaddleTiedHead(8, VOCAB)

    def forward(self, tokens):
        return self.output(self.final_norm(self.embed_tokens(tokens)))


def test_a_models_own_classes_pair_by_order_and_shape_and_an_lm_head_by_its_shape():
    torch.manual_seed(7)
    result = compare_models(TorchLM, PaddleLM, {"tokens": tokens()}, **FAST)
    assert result.passed, result.summary
    pairs = {m.torch: m.paddle for m in result.mapping.modules}
    assert pairs == {"emb": "embed_tokens", "norm": "final_norm", "lm_head": "output"}
    tensors = {t.torch: t for t in result.mapping.tensors}
    assert tensors["norm.weight"].paddle == "final_norm.scale"
    assert tensors["lm_head.weight"].transform == "none"          # [vocab, hidden] on both sides: not a Linear's


# ---------------------------------------------------------------------------------------------
# Inputs by name, renamed per side; the mapping file; conversion with token ids


class TorchMasked(tnn.Module):
    def __init__(self):
        super().__init__()
        self.emb = tnn.Embedding(VOCAB, 8)
        self.fc = tnn.Linear(8, 2)

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids) * attention_mask.unsqueeze(-1)
        return self.fc(h.sum(1))


class PaddleMasked(pnn.Layer):
    def __init__(self):
        super().__init__()
        self.emb = pnn.Embedding(VOCAB, 8)
        self.fc = pnn.Linear(8, 2)

    def forward(self, mask, ids):       # other names, another order
        return self.fc((self.emb(ids) * mask.unsqueeze(-1)).sum(1))


def test_inputs_bind_by_name_and_the_mapping_file_renames_them_per_side(tmp_path):
    ids = tokens()
    mask = (np.random.default_rng(1).random(ids.shape) > 0.3).astype(np.float32)
    inputs = {"input_ids": ids, "attention_mask": mask}
    with pytest.raises(Exception, match="the paddle model cannot run the input"):
        compare_models(TorchMasked, PaddleMasked, inputs, **FAST)     # bound in order: the mask as ids
    renames = tmp_path / "inputs.json"
    renames.write_text(json.dumps({"format": "dualbench-mapping/1",
                                   "inputs": {"paddle": {"input_ids": "ids", "attention_mask": "mask"}}}))
    torch.manual_seed(8)
    result = compare_models(TorchMasked, PaddleMasked, inputs, mapping=str(renames), **FAST)
    assert result.passed, result.summary


class TorchDecoderOnMemory(tnn.Module):
    def __init__(self):
        super().__init__()
        layer = tnn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.dec = tnn.TransformerDecoder(layer, 2)

    def forward(self, tgt, memory, tgt_mask):
        return self.dec(tgt, memory, tgt_mask=tgt_mask)


class PaddleDecoderOnMemory(pnn.Layer):
    def __init__(self):
        super().__init__()
        self.dec = pnn.TransformerDecoder(pnn.TransformerDecoderLayer(8, 2, 16, dropout=0.0), 2)

    def forward(self, tgt, memory, tgt_mask):
        return self.dec(tgt, memory, tgt_mask=tgt_mask)


class TorchStatefulLSTM(tnn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = tnn.LSTM(6, 8, num_layers=2)          # sequence first
        self.head = tnn.Linear(8, 3)

    def forward(self, x, h0, c0):
        out, (h, c) = self.rnn(x, (h0, c0))
        return self.head(out), h


class PaddleStatefulLSTM(pnn.Layer):
    def __init__(self):
        super().__init__()
        self.rnn = pnn.LSTM(6, 8, num_layers=2, time_major=True)
        self.head = pnn.Linear(8, 3)

    def forward(self, x, h0, c0):
        out, (h, c) = self.rnn(x, (h0, c0))
        return self.head(out), h


def test_inputs_without_a_shared_batch_axis_a_mask_memory_and_initial_states(tmp_path):
    """A .npz with a [T, T] additive mask beside [N, T, E] arrays, and a sequence-first LSTM with h0 and c0
    [layers, N, hidden]: both bind by name and pass, the float64 repeat included (it takes the whole batch
    when the arrays do not share a first axis)."""
    rng = np.random.default_rng(0)
    decoder = tmp_path / "decoder.npz"
    np.savez(decoder, tgt=rng.standard_normal((2, 4, 8)).astype(np.float32),
             memory=rng.standard_normal((2, 5, 8)).astype(np.float32),
             tgt_mask=np.triu(np.full((4, 4), -np.inf, np.float32), 1))
    path = "tests/test_sequence_pairs.py"
    proc = run_main("parity", "--torch", f"{path}:TorchDecoderOnMemory", "--paddle", f"{path}:PaddleDecoderOnMemory",
                    "--inputs", decoder, "--steps", "1", "--out", tmp_path / "decoder")
    assert proc.returncode == 0 and "TorchDecoderOnMemory vs PaddleDecoderOnMemory: pass" in proc.stdout, proc.stdout
    states = {"x": rng.standard_normal((5, 2, 6)).astype(np.float32),
              "h0": rng.standard_normal((2, 2, 8)).astype(np.float32),
              "c0": rng.standard_normal((2, 2, 8)).astype(np.float32)}
    torch.manual_seed(2)
    result = compare_models(TorchStatefulLSTM, PaddleStatefulLSTM, states, train_steps=1, float64=True)
    assert result.passed, result.summary
    assert {"(output[0])", "(output[1])"} <= set(result.rows.name)     # the logits and h, leaf by leaf


def test_a_batch_larger_than_the_float64_repeat_is_cut_to_its_first_rows():
    torch.manual_seed(1)
    result = compare_models(lambda: TorchTagger(), lambda: PaddleTagger(), {"tokens": tokens(n=10)},
                            train_steps=1, float64=True)
    assert result.passed, result.summary
    assert (result.rows.loc[result.rows["mode"] == "float64", "batch_size"] == 8).all()


@pytest.mark.slow
def test_convert_moves_a_transformer_checkpoint_through_the_concat_both_ways(tmp_path):
    from tests import sequence_models   # the builders as SPECs need an importable file
    torch.manual_seed(9)
    source = tmp_path / "enc.pt"
    torch.save(sequence_models.torch_encoder().state_dict(), source)
    np.savez(tmp_path / "tokens.npz", tokens=tokens())
    pair = ["--torch", "tests/sequence_models.py:torch_encoder", "--paddle", "tests/sequence_models.py:paddle_encoder"]
    proc = run_main("convert", *pair, "--from", source, "--to", tmp_path / "enc.pdparams",
                    "--inputs", tmp_path / "tokens.npz")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    back = tmp_path / "back.pt"
    proc = run_main("convert", *pair, "--from", tmp_path / "enc.pdparams", "--to", back,
                    "--inputs", tmp_path / "tokens.npz")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    original, restored = torch.load(source, weights_only=True), torch.load(back, weights_only=True)
    assert all(torch.equal(original[k], restored[k]) for k in original)
    state = paddle.load(str(tmp_path / "enc.pdparams"))
    q = state["enc.layers.0.self_attn.q_proj.weight"].numpy()
    np.testing.assert_array_equal(q, original["enc.layers.0.self_attn.in_proj_weight"][:16].numpy().T)


def test_rnn_tensors_pair_by_their_cells_names_not_by_order():
    """torch's flat names map to the paddle cell that holds the tensor, whatever order the paddle tensors are
    listed in (the shapes alone would pair weight_ih_l1 and weight_hh_l1 of a [4H, H] layer either way)."""
    from dualbench.parity.kinds import pair_tensors
    torch_tensors = {"weight_ih_l0": (32, 6), "weight_hh_l0": (32, 8), "weight_ih_l1": (32, 8), "weight_hh_l1": (32, 8),
                     "weight_hr_l1": (3, 8)}
    paddle_tensors = {"1.cell.weight_hh": (32, 8), "1.cell.weight_ho": (8, 3), "0.cell.weight_hh": (32, 8),
                      "1.cell.weight_ih": (32, 8), "0.cell.weight_ih": (32, 6)}
    pairs, torch_left, paddle_left = pair_tensors("lstm", torch_tensors, paddle_tensors)
    assert not torch_left and not paddle_left
    found = {t: (p, transform) for t, p, transform, _ in pairs}
    assert found["weight_ih_l1"] == ("1.cell.weight_ih", "none") and found["weight_hh_l0"] == ("0.cell.weight_hh", "none")
    assert found["weight_hr_l1"] == ("1.cell.weight_ho", "transpose")


class TorchLayers(tnn.Module):
    """Conv1d, GroupNorm, PReLU, Conv3d, ConvTranspose2d, PixelShuffle, Upsample, LayerNorm, two inputs."""

    def __init__(self):
        super().__init__()
        self.c1, self.gn, self.prelu = tnn.Conv1d(3, 4, 3, padding=1), tnn.GroupNorm(2, 4), tnn.PReLU(4)
        self.c3, self.up = tnn.Conv3d(1, 2, 3, padding=1), tnn.ConvTranspose2d(2, 8, 2, stride=2)
        self.shuffle, self.upsample = tnn.PixelShuffle(2), tnn.Upsample(scale_factor=2, mode="bilinear")
        self.ln = tnn.LayerNorm(8)

    def forward(self, x1, x3):
        a = self.prelu(self.gn(self.c1(x1)))
        d = self.ln(self.upsample(self.shuffle(self.up(self.c3(x3)[:, :, 0])))[..., :8])
        return torch.cat([a.flatten(1), d.flatten(1)], 1)


class PaddleLayers(pnn.Layer):
    def __init__(self):
        super().__init__()
        self.c1, self.gn, self.prelu = pnn.Conv1D(3, 4, 3, padding=1), pnn.GroupNorm(2, 4), pnn.PReLU(4)
        self.c3, self.up = pnn.Conv3D(1, 2, 3, padding=1), pnn.Conv2DTranspose(2, 8, 2, stride=2)
        self.shuffle, self.upsample = pnn.PixelShuffle(2), pnn.Upsample(scale_factor=2, mode="bilinear")
        self.ln = pnn.LayerNorm(8)

    def forward(self, x1, x3):
        a = self.prelu(self.gn(self.c1(x1)))
        d = self.ln(self.upsample(self.shuffle(self.up(self.c3(x3)[:, :, 0])))[..., :8])
        return paddle.concat([a.flatten(1), d.flatten(1)], 1)


def test_conv1d_conv3d_transposed_conv_prelu_pixelshuffle_upsample_group_and_layer_norm_pass():
    rng = np.random.default_rng(0)
    x = {"x1": rng.standard_normal((2, 3, 10)).astype(np.float32),
         "x3": rng.standard_normal((2, 1, 3, 4, 4)).astype(np.float32)}
    torch.manual_seed(10)
    result = compare_models(TorchLayers, PaddleLayers, x, loss="mse", weights="random", **FAST)
    assert result.passed, result.summary
    kinds = {m.torch: m.kind for m in result.mapping.modules}
    assert kinds == {"c1": "conv1d", "gn": "groupnorm", "prelu": "prelu", "c3": "conv3d", "up": "convtranspose2d",
                     "shuffle": "pixelshuffle", "upsample": "upsample", "ln": "layernorm"}
    assert {t.torch: t.paddle for t in result.mapping.tensors}["prelu.weight"] == "prelu._weight"
