"""Native paddle.nn.Layer models built from the common ModelSpec, with the spec's layer names."""
from paddle import nn


def build_layer(layer):
    a = dict(layer.args)
    kind = layer.kind
    if kind == "conv":
        return nn.Conv2D(a["cin"], a["cout"], a["k"], padding=a["pad"])
    if kind == "linear":
        return nn.Linear(a["fin"], a["fout"])
    if kind == "bn2d":
        return nn.BatchNorm2D(a["c"])          # momentum 0.9 kept == torch's 0.1 given to the new batch
    if kind == "maxpool":
        return nn.MaxPool2D(a["k"])
    if kind == "flatten":
        return nn.Flatten(1)
    if kind == "dropout":
        return nn.Dropout(a["p"])              # mode='upscale_in_train', as torch
    if kind == "dropout2d":
        return nn.Dropout2D(a["p"])
    activations = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
    if kind in activations:
        return activations[kind]()
    if kind == "softmax":
        return nn.Softmax(axis=1)
    raise ValueError(f"unknown layer kind {kind!r}")


def build_model(spec):
    """nn.Sequential of named layers; init 'kaiming_normal' is applied natively."""
    model = nn.Sequential(*[(layer.name, build_layer(layer)) for layer in spec.layers])
    if spec.init == "kaiming_normal":
        for module in model.sublayers():
            if isinstance(module, (nn.Linear, nn.Conv2D)):
                nn.initializer.KaimingNormal()(module.weight)   # fan_in, gain sqrt(2)
                nn.initializer.Constant(0.0)(module.bias)
    return model


def count_parameters(model):
    # paddle lists BatchNorm's _mean/_variance in parameters() with stop_gradient=True: skip them
    return sum(int(p.numel()) for p in model.parameters() if not p.stop_gradient)
