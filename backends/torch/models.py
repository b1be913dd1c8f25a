"""Native nn.Module models built from the common ModelSpec, with the spec's layer names."""
from collections import OrderedDict

from torch import nn


def build_layer(layer):
    a = dict(layer.args)
    kind = layer.kind
    if kind == "conv":
        return nn.Conv2d(a["cin"], a["cout"], a["k"], padding=a["pad"])
    if kind == "linear":
        return nn.Linear(a["fin"], a["fout"])
    if kind == "bn2d":
        return nn.BatchNorm2d(a["c"])          # momentum 0.1 to the new batch == paddle's 0.9 kept
    if kind == "maxpool":
        return nn.MaxPool2d(a["k"])
    if kind == "flatten":
        return nn.Flatten(1)
    if kind == "dropout":
        return nn.Dropout(a["p"])
    if kind == "dropout2d":
        return nn.Dropout2d(a["p"])
    activations = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
    if kind in activations:
        return activations[kind]()
    if kind == "softmax":
        return nn.Softmax(dim=1)
    raise ValueError(f"unknown layer kind {kind!r}")


def build_model(spec):
    """nn.Sequential of named layers; init 'kaiming_normal' is applied natively."""
    model = nn.Sequential(OrderedDict((layer.name, build_layer(layer)) for layer in spec.layers))
    if spec.init == "kaiming_normal":
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_normal_(module.weight)   # fan_in, gain sqrt(2)
                nn.init.zeros_(module.bias)
    return model


def count_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
