"""The task registry: every task of the seed notes, as plain data.

A task says *what* is trained (layers, loss, data, protocol); each backend says *how*, natively.
Layer names are part of the spec, so both backends use the same parameter names
(`conv1.weight`, `fc2.bias`, `bn1.running_mean`) and parity can match layers by name.
"""
from dataclasses import dataclass, replace
from typing import Optional, Tuple

from dualbench.common.errors import UserError

# ---------------------------------------------------------------------------------------------
# Model spec


@dataclass(frozen=True)
class Layer:
    kind: str   # conv | linear | bn2d | relu | sigmoid | tanh | softmax | maxpool | flatten | dropout | dropout2d
    name: str
    args: Tuple[Tuple[str, object], ...] = ()

    def arg(self, key, default=None):
        return dict(self.args).get(key, default)


PARAM_KINDS = ("conv", "linear", "bn2d")


def conv(name, cin, cout, k, pad=0):
    return Layer("conv", name, (("cin", cin), ("cout", cout), ("k", k), ("pad", pad)))


def linear(name, fin, fout):
    return Layer("linear", name, (("fin", fin), ("fout", fout)))


def bn2d(name, c):
    return Layer("bn2d", name, (("c", c),))


def act(kind, name):
    return Layer(kind, name)


def maxpool(name, k=2):
    return Layer("maxpool", name, (("k", k),))


def flatten(name="flatten"):
    return Layer("flatten", name)


def dropout(name, p):
    return Layer("dropout", name, (("p", p),))


def dropout2d(name, p):
    return Layer("dropout2d", name, (("p", p),))


@dataclass(frozen=True)
class ModelSpec:
    name: str                      # the seed's class name (Net, NetWidth, LeNet, ...)
    layers: Tuple[Layer, ...]
    input_shape: Tuple[int, int, int]
    # "framework": each framework's default initialisation (recorded; they differ: torch draws conv
    # weights from U(+-1/sqrt(fan_in)), paddle from N(0, sqrt(2/fan_in)), about 2.4x the std).
    # "kaiming_normal": conv/linear weights ~ N(0, sqrt(2/fan_in)), biases 0 (seed 001).
    init: str = "framework"

    @property
    def num_outputs(self):
        last = [layer for layer in self.layers if layer.kind == "linear"][-1]
        return last.arg("fout")


def parameter_shapes(model):
    """Canonical trainable parameter shapes (torch orientation: Linear weight is [out, in])."""
    shapes = {}
    for layer in model.layers:
        a = dict(layer.args)
        if layer.kind == "conv":
            shapes[f"{layer.name}.weight"] = (a["cout"], a["cin"], a["k"], a["k"])
            shapes[f"{layer.name}.bias"] = (a["cout"],)
        elif layer.kind == "linear":
            shapes[f"{layer.name}.weight"] = (a["fout"], a["fin"])
            shapes[f"{layer.name}.bias"] = (a["fout"],)
        elif layer.kind == "bn2d":
            shapes[f"{layer.name}.weight"] = (a["c"],)
            shapes[f"{layer.name}.bias"] = (a["c"],)
    return shapes


def buffer_shapes(model):
    """Canonical non-trainable state: BatchNorm running statistics."""
    return {f"{layer.name}.{stat}": (layer.arg("c"),)
            for layer in model.layers if layer.kind == "bn2d"
            for stat in ("running_mean", "running_var")}


def count_parameters(model):
    total = 0
    for shape in parameter_shapes(model).values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


def forward_macs(model):
    """Multiply-accumulates of one sample's forward pass through the conv and linear layers (stride 1 convs,
    square pooling), the rest left out: how much a task computes, without a framework. mnist-linear-mse 784,
    mnist-conv-ce 2.4 million."""
    _, h, w = model.input_shape
    total = 0
    for layer in model.layers:
        a = dict(layer.args)
        if layer.kind == "conv":
            h, w = h + 2 * a["pad"] - a["k"] + 1, w + 2 * a["pad"] - a["k"] + 1
            total += a["cout"] * h * w * a["cin"] * a["k"] * a["k"]
        elif layer.kind == "maxpool":
            h, w = h // a["k"], w // a["k"]
        elif layer.kind == "linear":
            total += a["fin"] * a["fout"]
    return total


# ---------------------------------------------------------------------------------------------
# Protocol


@dataclass(frozen=True)
class Optimizer:
    name: str              # sgd | momentum | adam
    lr: float
    momentum: float = 0.0  # only for "momentum" (dampening 0: paddle's Momentum has no dampening)
    weight_decay: float = 0.0  # coupled L2 (g += wd * w), identical in both frameworks


@dataclass(frozen=True)
class Schedule:
    name: str = "none"     # none | step | plateau   (stepped once per epoch)
    step_size: int = 30    # step
    gamma: float = 0.1     # step
    factor: float = 0.1    # plateau (on validation loss, mode 'min', cooldown 0)
    patience: int = 10     # plateau


@dataclass(frozen=True)
class Protocol:
    optimizer: Optimizer
    batch_size: int
    epochs: int
    schedule: Schedule = Schedule()
    drop_last: bool = False
    l1: float = 0.0        # loss term l1 * sum|p| over all trainable parameters (seed 001)
    l2: float = 0.0        # loss term l2 * sum p^2 over all trainable parameters (seed 003)
    grad_clip: Optional[float] = None     # global-norm clipping (torch formula, eps 1e-6)
    val_fraction: float = 0.0             # part of the training set held out for validation
    early_stop_patience: Optional[int] = None  # epochs without improvement of `monitor`
    monitor: str = "val_loss"             # val_loss (min) | val_acc (max)
    best_checkpoint: bool = False         # test with the best-`monitor` weights, not the last
    augment: str = "none"                 # training augmentation in common (see dualbench.common.data.augment)


@dataclass(frozen=True)
class DataSpec:
    dataset: str                          # default dataset name (see dualbench.common.data.sources)
    normalize: Tuple[float, float]        # (mean, std) applied to pixels scaled to [0, 1]
    classes: Optional[Tuple[int, ...]] = None  # keep these original labels, relabel 0..k-1


@dataclass(frozen=True)
class Task:
    name: str
    title: str
    seed_note: str         # which seed note(s) it comes from
    model: ModelSpec
    loss: str              # ce | mse_value (regress the digit value) | mse_onehot (softmax output vs one-hot)
                           # | mse (float targets of the output's shape) | sum (output sum) | ce_last
                           # (classes on the last axis: [N, T, V] outputs, [N, T] labels): model pairs
    protocol: Protocol
    data: DataSpec
    notes: str = ""
    target_accuracy: Optional[float] = None  # for time-to-target in benchmarks
    output_leaf: int = 0   # model pairs: which tensor of a tuple/dict output the loss is on (flattened order)

    @property
    def num_classes(self):
        if self.data.classes is not None:
            return len(self.data.classes)
        return 10 if self.loss == "mse_value" else self.model.num_outputs


LOSSES = ("ce", "mse_value", "mse_onehot", "mse", "sum", "ce_last")   # mse, sum, ce_last: model pairs (parity)

# ---------------------------------------------------------------------------------------------
# The MNIST family (seeds 000, 001, 002, 004)

MNIST_SHAPE = (1, 28, 28)
MNIST_CE_NORM = (0.1307, 0.3081)     # seed 001: ToTensor + Normalize((0.1307,), (0.3081,))
HALF_NORM = (0.5, 0.5)               # seeds 002/004: Normalize(127.5, 127.5) on 0..255 == [-1, 1]


def _mlp_layers(hidden, outputs, act_kind, dropout_p=None, relu_on_logits=False, softmax=False):
    layers = [flatten()]
    fin = 784
    for i, width in enumerate(hidden, start=1):
        layers.append(linear(f"fc{i}", fin, width))
        if dropout_p:
            layers.append(dropout(f"drop{i}", dropout_p))   # seed 001: Linear, Dropout, ReLU
        layers.append(act(act_kind, f"{act_kind}{i}"))
        fin = width
    layers.append(linear(f"fc{len(hidden) + 1}", fin, outputs))
    if relu_on_logits:
        layers.append(act("relu", f"relu{len(hidden) + 1}"))
    if softmax:
        layers.append(act("softmax", "softmax"))
    return tuple(layers)


def _mnist_conv_layers(outputs, softmax=False):
    layers = (conv("conv1", 1, 20, 5, pad=2), act("relu", "relu1"), maxpool("pool1"),
              conv("conv2", 20, 20, 5, pad=2), act("relu", "relu2"), maxpool("pool2"),
              flatten(), linear("fc", 980, outputs))
    return layers + ((act("softmax", "softmax"),) if softmax else ())


LENET_LAYERS = (conv("conv1", 1, 6, 3, pad=1), act("relu", "relu1"), maxpool("pool1"),
                conv("conv2", 6, 16, 5), act("relu", "relu2"), maxpool("pool2"),
                flatten(), linear("fc1", 400, 120), linear("fc2", 120, 84), linear("fc3", 84, 10))

_sgd_004 = Protocol(Optimizer("sgd", 0.001), batch_size=100, epochs=10)
_sgd_002 = Protocol(Optimizer("sgd", 0.01), batch_size=100, epochs=10)
_mlp_001 = Protocol(Optimizer("sgd", 0.01), batch_size=200, epochs=10, val_fraction=1 / 6)
_mnist = DataSpec("mnist", HALF_NORM)
_mnist_001 = DataSpec("mnist", MNIST_CE_NORM)


def _mlp(name, title, notes="", hidden=(200, 200), outputs=10, act_kind="relu", loss="ce",
         protocol=_mlp_001, **layer_kw):
    model = ModelSpec("MLP", _mlp_layers(hidden, outputs, act_kind, **layer_kw), MNIST_SHAPE,
                      init="kaiming_normal")
    return Task(name, title, "001", model, loss, protocol, _mnist_001, notes)


_TASKS = [
    Task("mnist-linear-mse", "Linear 784->1 regressing the digit value (MSE)", "004",
         ModelSpec("Linear", (flatten(), linear("fc", 784, 1)), MNIST_SHAPE),
         "mse_value", _sgd_004, _mnist,
         "square_error_cost + mean on the digit value; accuracy = rounded prediction == label."),
    Task("mnist-mlp-sigmoid-mse", "MLP 784-10-10-1 with sigmoid, MSE to the digit value", "004",
         ModelSpec("MLP", _mlp_layers((10, 10), 1, "sigmoid"), MNIST_SHAPE),
         "mse_value", _sgd_004, _mnist),
    Task("mnist-conv-mse", "Conv net (20@5x5 x2, fc 980->1), MSE to the digit value", "002/004",
         ModelSpec("SimpleNet", _mnist_conv_layers(1), MNIST_SHAPE), "mse_value", _sgd_002, _mnist,
         "Labels are float32 for the MSE model (seed 004)."),
    Task("mnist-conv-ce", "Conv net (20@5x5 x2, fc 980->10), cross-entropy", "002/004",
         ModelSpec("SimpleNet", _mnist_conv_layers(10), MNIST_SHAPE), "ce", _sgd_002, _mnist,
         "Labels must be int64 for cross-entropy (the seed's float labels are a bug)."),
    Task("mnist-conv-softmax-mse", "Conv net with softmax output, MSE to one-hot", "000/002",
         ModelSpec("SimpleNet", _mnist_conv_layers(10, softmax=True), MNIST_SHAPE), "mse_onehot",
         _sgd_002, _mnist, "The loss seed 000 argues against: MSE between softmax(p) and one-hot(y)."),
    _mlp("mnist-mlp", "MLP 784-200-200-10 ReLU, kaiming-normal init, cross-entropy",
         "Seed 001's intended MLP (no ReLU on the logits), on a seeded 50k/10k train/val split."),
    _mlp("mnist-mlp-relu-logits", "Seed 001's buggy MLP: ReLU applied to the logits",
         "Kept to show the effect of the bug the seed reports as 10% test accuracy.",
         relu_on_logits=True),
    _mlp("mnist-mlp-mse-value", "MLP 784-200-200-1, MSE to the digit value", outputs=1, loss="mse_value"),
    _mlp("mnist-mlp-softmax-mse", "MLP 784-200-200-10 softmax output, MSE to one-hot",
         loss="mse_onehot", softmax=True),
    _mlp("mnist-mlp-l2", "mnist-mlp + L2 as weight decay 0.01 (coupled, in the optimizer)",
         protocol=replace(_mlp_001, optimizer=Optimizer("sgd", 0.01, weight_decay=0.01))),
    _mlp("mnist-mlp-l1", "mnist-mlp + L1 loss term 0.01 * sum|w| over all parameters",
         protocol=replace(_mlp_001, l1=0.01)),
    _mlp("mnist-mlp-momentum", "mnist-mlp + SGD momentum 0.9",
         protocol=replace(_mlp_001, optimizer=Optimizer("momentum", 0.01, momentum=0.9))),
    _mlp("mnist-mlp-dropout", "mnist-mlp + Dropout(0.5) after each hidden Linear", dropout_p=0.5),
    _mlp("mnist-mlp-steplr", "mnist-mlp + StepLR(step_size=30, gamma=0.1)",
         "The seed's schedule; it only changes the lr after 30 epochs (use --epochs > 30 to see it).",
         protocol=replace(_mlp_001, schedule=Schedule("step", step_size=30, gamma=0.1))),
    _mlp("mnist-mlp-plateau", "mnist-mlp + ReduceLROnPlateau('min') on validation loss",
         "torch ReduceLROnPlateau / paddle lr.ReduceOnPlateau: factor 0.1, patience 10, cooldown 0.",
         protocol=replace(_mlp_001, schedule=Schedule("plateau", factor=0.1, patience=10))),
    _mlp("mnist-mlp-earlystop", "mnist-mlp + early stopping (patience 3 on val loss), best weights",
         "Up to 30 epochs; stops after 3 epochs without a lower validation loss and tests the best.",
         protocol=replace(_mlp_001, epochs=30, early_stop_patience=3, best_checkpoint=True)),
    Task("mnist-lenet", "LeNet (paddle.vision.models.LeNet), Adam 1e-3, batch 64", "004",
         ModelSpec("LeNet", LENET_LAYERS, MNIST_SHAPE),
         "ce", Protocol(Optimizer("adam", 1e-3), batch_size=64, epochs=5), _mnist,
         "paddle high-level API protocol: Adam 1e-3, batch 64, 5 epochs, evaluated on the test set. "
         "No activations between the fc layers, as in paddle.vision.models.LeNet.",
         target_accuracy=0.97),
]

# ---------------------------------------------------------------------------------------------
# CIFAR-10 bird vs airplane (seed 003) and Food-11 (seed 000)

CIFAR_SHAPE = (3, 32, 32)
_cifar2 = DataSpec("cifar10", (0.0, 1.0), classes=(0, 2))   # ToTensor only; airplane -> 0, bird -> 1
_cifar_sgd = Protocol(Optimizer("sgd", 1e-2), batch_size=64, epochs=100, drop_last=True)


def _cifar_layers(width, batchnorm=False, dropout_p=None):
    """Seed 003's Net family: conv-tanh-pool x2, fc (width/2)*8*8 -> 32 tanh -> 2."""
    half = width // 2
    layers = []
    for i, (cin, cout) in enumerate(((3, width), (width, half)), start=1):
        layers.append(conv(f"conv{i}", cin, cout, 3, pad=1))
        if batchnorm:
            layers.append(bn2d(f"conv{i}_batchnorm", cout))        # before tanh, as the seed
        layers += [act("tanh", f"tanh{i}"), maxpool(f"pool{i}")]
        if dropout_p:
            layers.append(dropout2d(f"conv{i}_dropout", dropout_p))
    return tuple(layers + [flatten(), linear("fc1", half * 8 * 8, 32), act("tanh", "tanh3"),
                           linear("fc2", 32, 2)])


_SEED_003_FIX = ("The seed's forward pass skips conv2 (tanh applied to conv1's pooled output twice), "
                 "which cannot run (shape mismatch); this is the intended conv1 -> conv2 network.")

_TASKS += [
    Task("cifar2-net", "Net: conv 3->16->8 tanh, fc 512->32->2 (bird vs airplane)", "003",
         ModelSpec("Net", _cifar_layers(16), CIFAR_SHAPE), "ce", _cifar_sgd, _cifar2,
         "Seed 003 (100 epochs, torch): train 0.9037 / val 0.8765; the seed's val set is CIFAR-10's "
         "test batch (our test split). 18,090 parameters."),
    Task("cifar2-netwidth", "NetWidth: n_channel 32 (conv 3->32->16, fc 1024->32->2)", "003",
         ModelSpec("NetWidth", _cifar_layers(32), CIFAR_SHAPE), "ce", _cifar_sgd, _cifar2,
         _SEED_003_FIX + " 38,386 parameters."),
    Task("cifar2-netdropout", "NetWidth + Dropout2d(0.4) after each conv block", "003",
         ModelSpec("NetDropout", _cifar_layers(32, dropout_p=0.4), CIFAR_SHAPE), "ce", _cifar_sgd, _cifar2,
         _SEED_003_FIX + " The seed also applies conv2_dropout twice; here each block has its own."),
    Task("cifar2-netbatchnorm", "NetWidth + BatchNorm2d after each conv, CE + 0.001 * sum(p^2)", "003",
         ModelSpec("NetBatchNorm", _cifar_layers(32, batchnorm=True), CIFAR_SHAPE), "ce",
         replace(_cifar_sgd, l2=0.001), _cifar2,
         "L2 over all parameters (BN's gamma/beta included), as the seed writes it. "
         "Seed 003: train 0.9860 / val 0.8805."),
]

FOOD_SHAPE = (3, 128, 128)


def _food_layers():
    layers = []
    channels = (3, 64, 128, 256, 512, 512)
    for i in range(1, 6):
        layers += [conv(f"conv{i}", channels[i - 1], channels[i], 3, pad=1), bn2d(f"bn{i}", channels[i]),
                   act("relu", f"relu{i}"), maxpool(f"pool{i}")]
    return tuple(layers + [flatten(), linear("fc1", 512 * 4 * 4, 1024), act("relu", "relu6"),
                           linear("fc2", 1024, 512), act("relu", "relu7"), linear("fc3", 512, 11)])


_TASKS.append(
    Task("food11-cnn", "Food-11: 5 x [conv3x3, BN, ReLU, maxpool] (64..512), fc 8192->1024->512->11", "000",
         ModelSpec("Classifier", _food_layers(), FOOD_SHAPE), "ce",
         Protocol(Optimizer("adam", 3e-4, weight_decay=1e-5), batch_size=64, epochs=30, grad_clip=10.0,
                  early_stop_patience=6, monitor="val_acc", best_checkpoint=True),
         DataSpec("food11", (0.0, 1.0)),
         "The note shows no optimizer: Adam lr 3e-4, weight_decay 1e-5 (coupled), batch 64 come from the "
         "course sample. Gradient clipping at global norm 10 (torch formula, eps 1e-6, in both). Best "
         "checkpoint on validation accuracy; the note stops when stale > patience 5, i.e. after 6 epochs "
         "without improvement (early_stop_patience=6 here)."))

TASKS = {t.name: t for t in _TASKS}


def get_task(name):
    try:
        return TASKS[name]
    except KeyError:
        raise UserError(f"unknown task '{name}' (see `dualbench tasks`; known: {', '.join(TASKS)})") from None


def with_overrides(task, lr=None, batch_size=None, augment=None):
    """The task with its learning rate, batch size or augmentation replaced (None keeps the spec's)."""
    proto = task.protocol
    if augment is not None:
        proto = replace(proto, augment=augment)
    if lr is not None:
        if not lr > 0:
            raise UserError(f"--lr must be positive, got {lr}")
        proto = replace(proto, optimizer=replace(proto.optimizer, lr=float(lr)))
    if batch_size is not None:
        if batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {batch_size}")
        proto = replace(proto, batch_size=int(batch_size))
    return replace(task, protocol=proto)


def select_tasks(names):
    """Comma-separated names or 'all'."""
    if names in (None, "", "all"):
        return list(TASKS.values())
    return [get_task(n.strip()) for n in names.split(",") if n.strip()]
