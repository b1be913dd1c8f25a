"""Builders for SPECs (`tests/sequence_models.py:torch_encoder`): a small Transformer encoder over token ids
in each framework's own classes."""
from paddle import nn as pnn
from torch import nn as tnn

VOCAB = 40


class TorchEncoder(tnn.Module):
    def __init__(self, d=16, heads=2):
        super().__init__()
        self.emb = tnn.Embedding(VOCAB, d)
        self.enc = tnn.TransformerEncoder(tnn.TransformerEncoderLayer(d, heads, 32, batch_first=True), 2,
                                          enable_nested_tensor=False)
        self.head = tnn.Linear(d, VOCAB)

    def forward(self, tokens):
        return self.head(self.enc(self.emb(tokens)))


class PaddleEncoder(pnn.Layer):
    def __init__(self, d=16, heads=2):
        super().__init__()
        self.emb = pnn.Embedding(VOCAB, d)
        self.enc = pnn.TransformerEncoder(pnn.TransformerEncoderLayer(d, heads, 32), 2)
        self.head = pnn.Linear(d, VOCAB)

    def forward(self, tokens):
        return self.head(self.enc(self.emb(tokens)))


def torch_encoder():
    return TorchEncoder()


def paddle_encoder():
    return PaddleEncoder()
