"""Diagnosis that proves its cause: every known convention, broken on purpose on one side, is named
exactly (the replay with it flipped reproduces the other side), and nothing else is; a difference no
flip explains is reported as unexplained."""
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("paddle")

import paddle  # noqa: E402
import paddle.nn.functional as PF  # noqa: E402
import torch  # noqa: E402

from dualbench import compare_models, parity  # noqa: E402
from dualbench.common.tasks import Optimizer, Schedule, flatten, linear  # noqa: E402
from tests.test_parity import BN_CNN, MLP, MLP_ADAM, small_task  # noqa: E402

T, P = torch.nn, paddle.nn


def run_pair(torch_layers, paddle_layers, shape, scale=1.0, **kw):
    """A torch and a paddle Sequential of the given layers, checked on one seeded batch."""
    torch.manual_seed(0)
    paddle.seed(0)
    x = (scale * np.random.default_rng(0).standard_normal(shape)).astype(np.float32)
    options = dict(train_steps=1, float64=False, weights="random")
    options.update(kw)
    return compare_models(T.Sequential(*torch_layers), P.Sequential(*paddle_layers), x, **options)


def cause_of(result, module, mode=None):
    """The first failure: at `module` (and in `mode`), with exactly one cause named."""
    assert result.result == "FAIL", result.summary
    first = result.first_failure
    assert first["name"] == module, (first["name"], first["cause"])
    if mode:
        assert first["mode"] == mode, first
    assert " Or: " not in first["cause"], first["cause"]
    return first["cause"]


class Hardsigmoid02(P.Hardsigmoid):
    """The old fluid hard_sigmoid: slope 0.2."""

    def forward(self, x):
        return PF.hardsigmoid(x, slope=0.2, offset=0.5)


class ScaledConv(P.Conv2D):
    """A conv whose output is off by 0.1% for no known reason."""

    def forward(self, x):
        return super().forward(x) * 1.001


# each: torch layers, paddle layers, input shape, the failing module, words the cause must contain
LAYER_CASES = {
    "batchnorm epsilon": (lambda: [T.Conv2d(3, 4, 3, padding=1), T.BatchNorm2d(4)],
                          lambda: [P.Conv2D(3, 4, 3, padding=1), P.BatchNorm2D(4, epsilon=1e-2)],
                          (4, 3, 6, 6), "1", "normalisation epsilon: replayed with eps=0.01"),
    "batchnorm use_global_stats": (lambda: [T.Conv2d(3, 4, 3, padding=1), T.BatchNorm2d(4)],
                                   lambda: [P.Conv2D(3, 4, 3, padding=1), P.BatchNorm2D(4, use_global_stats=True)],
                                   (4, 3, 6, 6), "1", "BatchNorm statistics in train mode"),
    "layernorm epsilon": (lambda: [T.Linear(6, 8), T.LayerNorm(8)],
                          lambda: [P.Linear(6, 8), P.LayerNorm(8, epsilon=1e-3)], (4, 5, 6), "1",
                          "normalisation epsilon"),
    "groupnorm epsilon": (lambda: [T.Conv2d(3, 4, 3, padding=1), T.GroupNorm(2, 4)],
                          lambda: [P.Conv2D(3, 4, 3, padding=1), P.GroupNorm(2, 4, epsilon=1e-1)],
                          (4, 3, 6, 6), "1", "normalisation epsilon"),
    "avgpool padding": (lambda: [T.Conv2d(3, 4, 3, padding=1), T.AvgPool2d(3, stride=1, padding=1)],
                        lambda: [P.Conv2D(3, 4, 3, padding=1), P.AvgPool2D(3, stride=1, padding=1)],
                        (2, 3, 6, 6), "1", "AvgPool padding in the average"),
    "pooling ceil_mode": (lambda: [T.Conv2d(3, 4, 3, padding=1), T.MaxPool2d(2, ceil_mode=True)],
                          lambda: [P.Conv2D(3, 4, 3, padding=1), P.MaxPool2D(2)], (2, 3, 7, 7), "1",
                          "pooling ceil_mode"),
    "pooling padding": (lambda: [T.Conv2d(3, 4, 3, padding=1), T.MaxPool2d(3, stride=2, padding=1)],
                        lambda: [P.Conv2D(3, 4, 3, padding=1), P.MaxPool2D(3, stride=2)], (2, 3, 8, 8), "1",
                        "padding: replayed with padding=(0, 0)"),
    "interpolation align_mode": (lambda: [T.Conv2d(3, 4, 3, padding=1), T.Upsample(scale_factor=2, mode="bilinear")],
                                 lambda: [P.Conv2D(3, 4, 3, padding=1),
                                          P.Upsample(scale_factor=2, mode="bilinear", align_mode=1)],
                                 (2, 3, 5, 5), "1", "interpolation coordinates: replayed with coordinate='asymmetric'"),
    "interpolation align_corners": (lambda: [T.Conv2d(3, 4, 3, padding=1),
                                             T.Upsample(scale_factor=2, mode="bilinear", align_corners=True)],
                                    lambda: [P.Conv2D(3, 4, 3, padding=1), P.Upsample(scale_factor=2, mode="bilinear")],
                                    (2, 3, 5, 5), "1", "interpolation coordinates: replayed with coordinate='half_pixel'"),
    "gelu approximation": (lambda: [T.Linear(6, 8), T.GELU()], lambda: [P.Linear(6, 8), P.GELU(approximate=True)],
                           (4, 6), "1", "GELU exact or tanh approximation"),
    "hard-sigmoid slope": (lambda: [T.Linear(6, 8), T.Hardsigmoid()], lambda: [P.Linear(6, 8), Hardsigmoid02()],
                           (16, 6), "1", "hard-sigmoid slope"),
    "relu6": (lambda: [T.Linear(6, 8), T.ReLU6()], lambda: [P.Linear(6, 8), P.ReLU()], (16, 6), "1",
              "ReLU or ReLU6", 10.0),   # inputs large enough to reach 6
    "softmax axis": (lambda: [T.Conv1d(3, 4, 3, padding=1), T.Softmax(dim=1)],
                     lambda: [P.Conv1D(3, 4, 3, padding=1), P.Softmax()], (2, 3, 5), "1", "softmax axis"),
    "dropout mode": (lambda: [T.Linear(6, 8), T.Dropout(0.5)],
                     lambda: [P.Linear(6, 8), P.Dropout(0.5, mode="downscale_in_infer")], (4, 6), "1",
                     "dropout scaling mode"),
    "padding mode": (lambda: [T.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")],
                     lambda: [P.Conv2D(3, 4, 3, padding=1)], (2, 3, 6, 6), "0", "convolution padding mode"),
}


@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_layer_convention_is_named_and_proven(case):
    torch_layers, paddle_layers, shape, module, words, *scale = LAYER_CASES[case]
    cause = cause_of(run_pair(torch_layers(), paddle_layers(), shape, *scale), module)
    assert words in cause and "reproduces paddle's output" in cause, cause


def test_dropout_mode_shows_in_eval_too():
    torch_layers, paddle_layers, shape, module, words, *_ = LAYER_CASES["dropout mode"]
    result = run_pair(torch_layers(), paddle_layers(), shape)
    assert cause_of(result, module, mode="eval")


def test_linear_orientation_of_a_square_weight_from_an_edited_mapping():
    from dualbench.parity.mapping import Mapping
    layers = (lambda: [T.Linear(8, 8), T.Tanh(), T.Linear(8, 3)], lambda: [P.Linear(8, 8), P.Tanh(), P.Linear(8, 3)])
    good = run_pair(layers[0](), layers[1](), (4, 8))
    assert good.passed, good.summary
    edited = Mapping(good.mapping.modules, info=good.mapping.info)
    for tensor in edited.modules[0].tensors:
        tensor.transform = "none"          # a square weight: no shape check can catch it
    cause = cause_of(run_pair(layers[0](), layers[1](), (4, 8), mapping=edited), "0")
    assert "Linear weight orientation" in cause


def test_a_difference_no_convention_explains_is_unexplained():
    result = run_pair([T.Conv2d(3, 4, 3, padding=1), T.ReLU()], [ScaledConv(3, 4, 3, padding=1), P.ReLU()],
                      (2, 3, 6, 6))
    cause = cause_of(result, "0")
    assert cause.startswith("no known convention explains this") and "reproduces paddle's output (" not in cause


def test_correct_ports_of_every_layer_pass():
    """The same layers without the break: zero false positives, every case."""
    fixed = {"batchnorm epsilon": P.BatchNorm2D(4), "batchnorm use_global_stats": P.BatchNorm2D(4),
             "layernorm epsilon": P.LayerNorm(8), "groupnorm epsilon": P.GroupNorm(2, 4),
             "avgpool padding": P.AvgPool2D(3, stride=1, padding=1, exclusive=False),
             "pooling ceil_mode": P.MaxPool2D(2, ceil_mode=True), "pooling padding": P.MaxPool2D(3, 2, padding=1),
             "interpolation align_mode": P.Upsample(scale_factor=2, mode="bilinear"),
             "interpolation align_corners": P.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
             "gelu approximation": P.GELU(), "hard-sigmoid slope": P.Hardsigmoid(), "relu6": P.ReLU6(),
             "softmax axis": P.Softmax(axis=1), "dropout mode": P.Dropout(0.5)}
    for case, (torch_layers, paddle_layers, shape, _, _, *scale) in LAYER_CASES.items():
        if case == "padding mode":
            paddle_side = [P.Conv2D(3, 4, 3, padding=1, padding_mode="reflect")]
        else:
            paddle_side = paddle_layers()[:1] + [fixed[case]]
        result = run_pair(torch_layers(), paddle_side, shape, *scale)
        assert result.passed, (case, result.summary)


# ---------------------------------------------------------------------------------------------
# Losses


def paddle_loss_side(loss_fn):
    from dualbench.backends.paddle.train import make_state

    def make_state_with(task, model):
        state = make_state(task, model, "cpu")
        state.loss_fn = loss_fn
        return state
    return parity.load_side("paddle", make_state=make_state_with)


@pytest.mark.parametrize("loss_fn, words", [
    (lambda out, y: PF.cross_entropy(out, y, label_smoothing=0.1), "label smoothing: the cross-entropy of the same "
                                                                    "outputs with smoothing=0.1"),
    (lambda out, y: PF.cross_entropy(PF.softmax(out, axis=1), y), "cross-entropy input: the cross-entropy of the "
                                                                   "same outputs with softmax_twice=True"),
])
def test_loss_convention_is_named(loss_fn, words):
    sides = {"torch": parity.load_side("torch"), "paddle": paddle_loss_side(loss_fn)}
    rows = parity.check_task(MLP, sides, parity.ParityConfig(steps=1))
    first = next(r for r in rows if r["status"] in ("FAIL", "error"))
    assert first["check"] == "loss" and words in first["cause"] and " Or: " not in first["cause"], first["cause"]


def test_cross_entropy_axis_on_sequence_outputs():
    """[N, C, L] outputs: torch's class axis is 1, paddle's default the last one."""
    import copy

    from dualbench.parity.checks import check_pair
    from dualbench.parity.pair import ParityConfig, model_pair
    # paddle's cross_entropy on its default axis, the last: what a port that forgets axis=1 computes
    # (5 classes over 5 positions, so that both readings run)
    sides = {"torch": parity.load_side("torch"), "paddle": paddle_loss_side(lambda out, y: PF.cross_entropy(out, y))}
    torch.manual_seed(0)
    tm, pm = T.Sequential(T.Conv1d(3, 5, 3, padding=1)), P.Sequential(P.Conv1D(3, 5, 3, padding=1))
    factories = {"torch": lambda: copy.deepcopy(tm), "paddle": lambda: copy.deepcopy(pm)}
    for name in sides:
        sides[name].build_model = (lambda f: lambda spec: f())(factories[name])
    x = np.random.default_rng(0).standard_normal((4, 3, 5)).astype(np.float32)
    config = ParityConfig(steps=1, float64=False, weights="random")
    pair = model_pair(factories, sides, config, x, loss="ce")
    rows = check_pair(pair, sides, config)
    first = next(r for r in rows if r["status"] in ("FAIL", "error"))
    assert first["check"] == "loss" and "cross-entropy class axis" in first["cause"], first["cause"]


# ---------------------------------------------------------------------------------------------
# Optimizer steps


def paddle_optimizer_side(make_optimizer, clip=None):
    from dualbench.backends.paddle.train import make_state

    def make_state_with(task, model):
        unclipped = replace(task, protocol=replace(task.protocol, grad_clip=None)) if clip else task
        state = make_state(unclipped, model, "cpu")
        params = [p for p in model.parameters() if not p.stop_gradient]
        state.optimizer = make_optimizer(task, params)
        return state
    return parity.load_side("paddle", make_state=make_state_with)


def first_training_cause(task, paddle_side, torch_side=None, steps=3):
    sides = {"torch": torch_side or parity.load_side("torch"), "paddle": paddle_side}
    rows = parity.check_task(task, sides, parity.ParityConfig(steps=steps))
    failing = [r for r in rows if r["status"] in ("FAIL", "error")]
    assert failing, "the broken optimizer was not detected"
    # nothing before training differs; after it, the eval forward of the trained models may
    assert all(r["check"] in ("train", "schedule") or r["mode"].startswith("eval-after-train") for r in failing), \
        [(r["check"], r["mode"], r["name"]) for r in failing]
    named = [r for r in failing if r["check"] == "train" and r["cause"] and
             not r["cause"].startswith(("see ", "follows from"))]
    assert named, failing[0]
    cause = named[0]["cause"]
    assert " Or: " not in cause, cause
    return cause


MOMENTUM = small_task("t-mom", [flatten(), linear("fc1", 16, 8), linear("fc2", 8, 3)], (1, 4, 4),
                      optimizer=Optimizer("momentum", 0.05, momentum=0.9))
CLIPPED = small_task("t-clip", [flatten(), linear("fc1", 16, 8), linear("fc2", 8, 3)], (1, 4, 4),
                     optimizer=Optimizer("sgd", 0.5), grad_clip=0.05)
SCHEDULED = small_task("t-sched", [flatten(), linear("fc1", 16, 8), linear("fc2", 8, 3)], (1, 4, 4),
                       optimizer=Optimizer("sgd", 0.1), schedule=Schedule("step", step_size=1, gamma=0.5))


def adam(**kw):
    return lambda task, params: paddle.optimizer.Adam(learning_rate=task.protocol.optimizer.lr, parameters=params, **kw)


@pytest.mark.parametrize("make_optimizer, words", [
    (adam(epsilon=1e-6), "Adam epsilon"),
    (adam(beta2=0.99), "Adam betas"),
])
def test_adam_convention_is_named_and_not_confused_with_adamw(make_optimizer, words):
    cause = first_training_cause(MLP_ADAM, paddle_optimizer_side(make_optimizer))
    assert words in cause and "AdamW" not in cause, cause


def test_nesterov_is_named():
    side = paddle_optimizer_side(lambda task, params: paddle.optimizer.Momentum(
        learning_rate=task.protocol.optimizer.lr, momentum=0.9, parameters=params, use_nesterov=True))
    assert "Nesterov momentum" in first_training_cause(MOMENTUM, side)


def test_momentum_dampening_on_the_torch_side_is_named():
    from dualbench.backends.torch.train import make_state

    def torch_with_dampening(task, model):
        state = make_state(task, model, torch.device("cpu"))
        state.optimizer = torch.optim.SGD(model.parameters(), lr=task.protocol.optimizer.lr, momentum=0.9,
                                          dampening=0.9)
        return state
    cause = first_training_cause(MOMENTUM, parity.load_side("paddle"),
                                 parity.load_side("torch", make_state=torch_with_dampening))
    assert "momentum dampening" in cause and "reproduces torch's update" in cause, cause


def test_per_tensor_clipping_is_named():
    side = paddle_optimizer_side(lambda task, params: paddle.optimizer.SGD(
        learning_rate=task.protocol.optimizer.lr, parameters=params,
        grad_clip=paddle.nn.ClipGradByNorm(task.protocol.grad_clip)), clip=True)
    assert "per-tensor instead of global clipping" in first_training_cause(CLIPPED, side)


def test_schedule_stepped_per_step_is_named():
    from dualbench.backends.paddle.train import train_step

    def train_step_stepping_the_schedule(state, x, y):
        out = train_step(state, x, y)
        state.scheduler.step()          # per step instead of per epoch
        return out
    cause = first_training_cause(SCHEDULED, parity.load_side("paddle", train_step=train_step_stepping_the_schedule))
    assert "learning-rate schedule stepped per step" in cause, cause


def test_schedule_off_by_one_is_named():
    from dualbench.backends.paddle.train import make_state

    def make_state_stepped_once(task, model):
        state = make_state(task, model, "cpu")
        state.scheduler.step()          # before the first epoch
        return state
    sides = {"torch": parity.load_side("torch"), "paddle": parity.load_side("paddle", make_state=make_state_stepped_once)}
    rows = parity.check_task(SCHEDULED, sides, parity.ParityConfig(steps=2))
    train = next(r for r in rows if r["status"] == "FAIL" and r["check"] == "train" and r["cause"]
                 and not r["cause"].startswith("see "))
    assert "learning-rate schedule off by one" in train["cause"] and " Or: " not in train["cause"], train["cause"]
    schedule = next(r for r in rows if r["check"] == "schedule")
    assert schedule["status"] == "FAIL" and "off by one" in schedule["cause"], schedule["cause"]


def test_an_update_no_convention_explains_is_unexplained():
    side = paddle_optimizer_side(lambda task, params: paddle.optimizer.SGD(
        learning_rate=task.protocol.optimizer.lr * 1.37, parameters=params))
    cause = first_training_cause(MLP, side)
    assert cause.startswith("no known convention explains this"), cause


def test_correct_optimizers_pass():
    for task in (MLP, MLP_ADAM, MOMENTUM, CLIPPED, SCHEDULED, BN_CNN):
        rows = parity.check_task(task, parity.load_sides(), parity.ParityConfig(steps=3))
        assert not [r for r in rows if r["status"] in ("FAIL", "error")], task.name
