"""Training and evaluation with native PaddlePaddle: loss, optimizer, scheduler, clipping, one epoch.

The epoch loop around these functions (early stopping, best checkpoint, rows) is framework-blind
and lives in benchmarks/engine.py; everything here is the paddle side of one step.
"""
import math
from dataclasses import dataclass
from typing import Callable, Optional

import paddle
import paddle.nn.functional as F

from dualbench.common.nested import nested_leaves


@dataclass
class TrainState:
    task: object
    model: paddle.nn.Layer
    optimizer: paddle.optimizer.Optimizer
    scheduler: Optional[object]
    loss_fn: Callable
    dev: str


def primary_output(value, leaf=0):
    """The tensor a loss is computed on: the output itself, or the leaf-th tensor (0: the first) of a
    tuple/list/dict output, in flattened order (models that also return states or attention weights)."""
    leaves = [t for _, t in nested_leaves(value, lambda v: isinstance(v, paddle.Tensor))]
    if not leaves:
        raise TypeError(f"the model returns {type(value).__name__}, not a tensor")
    if leaf >= len(leaves):
        raise ValueError(f"the model returns {len(leaves)} tensors; output {leaf} does not exist")
    return leaves[leaf]


def call_model(model, xb):
    """The model on a batch: one tensor, or (args, kwargs) for a model with several inputs (parity's model
    pairs: token ids, masks, initial states bound to forward()'s parameter names)."""
    if isinstance(xb, tuple) and len(xb) == 2 and isinstance(xb[1], dict):
        return model(*xb[0], **xb[1])
    return model(xb)


def make_loss(task):
    """Data loss on the model's (primary) output: ce | mse_value | mse_onehot (output already
    softmaxed) | mse (float targets of the output's shape) | sum (the output's sum, labels unused) |
    ce_last (class scores on the last axis, [N, L, C] against [N, L] labels: a tagger or a language model)."""
    losses = {
        # torch's conventions: the class axis is 1 (paddle's default is the last one), and float
        # targets of the output's shape are probabilities (paddle needs soft_label=True for those)
        "ce": lambda out, y: F.cross_entropy(out, y, axis=1, soft_label=y.dtype != paddle.int64 and
                                             tuple(y.shape) == tuple(out.shape)),
        "mse_value": lambda out, y: F.mse_loss(out.squeeze(1), y.astype(out.dtype)),
        "mse_onehot": lambda out, y: F.mse_loss(out, F.one_hot(y, out.shape[1]).astype(out.dtype)),
        "mse": lambda out, y: F.mse_loss(out, y.astype(out.dtype)),
        "sum": lambda out, y: out.sum(),
        # classes on the last axis ([N, T, V] outputs, [N, T] labels), the mean over every position
        "ce_last": lambda out, y: F.cross_entropy(out.reshape([-1, out.shape[-1]]), y.reshape([-1]), axis=1),
    }
    if task.loss not in losses:
        raise ValueError(f"unknown loss {task.loss!r}")
    loss, leaf = losses[task.loss], task.output_leaf
    return lambda out, y: loss(primary_output(out, leaf), y)


def predict_classes(out, num_classes):
    """argmax for class scores; rounded value (clipped to the classes) for a 1-output regressor."""
    if out.shape[1] == 1:
        return out.squeeze(1).round().clip(0, num_classes - 1).astype("int64")
    return out.argmax(1)


def make_optimizer(task, model, learning_rate=None):
    """learning_rate: default the task's; paddle's scheduler *is* the learning rate."""
    opt = task.protocol.optimizer
    learning_rate = opt.lr if learning_rate is None else learning_rate
    params = [p for p in model.parameters() if not p.stop_gradient]
    wd = opt.weight_decay or None   # a float is coupled L2Decay, as torch's weight_decay
    if opt.name == "sgd":
        return paddle.optimizer.SGD(learning_rate=learning_rate, parameters=params, weight_decay=wd)
    if opt.name == "momentum":
        return paddle.optimizer.Momentum(learning_rate=learning_rate, momentum=opt.momentum,
                                         parameters=params, weight_decay=wd)
    if opt.name == "adam":
        return paddle.optimizer.Adam(learning_rate=learning_rate, parameters=params, weight_decay=wd)
    raise ValueError(f"unknown optimizer {opt.name!r}")


def make_scheduler(task, optimizer=None):
    """paddle's scheduler *is* the optimizer's learning_rate (None: a constant float), so it is made
    before the optimizer and takes none."""
    sched, lr = task.protocol.schedule, task.protocol.optimizer.lr
    if sched.name == "none":
        return None
    if sched.name == "step":
        return paddle.optimizer.lr.StepDecay(learning_rate=lr, step_size=sched.step_size, gamma=sched.gamma)
    if sched.name == "plateau":
        return paddle.optimizer.lr.ReduceOnPlateau(learning_rate=lr, mode="min", factor=sched.factor,
                                                   patience=sched.patience, cooldown=0)
    raise ValueError(f"unknown schedule {sched.name!r}")


def make_state(task, model, dev):
    scheduler = make_scheduler(task)
    optimizer = make_optimizer(task, model, scheduler)
    return TrainState(task, model, optimizer, scheduler, make_loss(task), dev)


def regularisation(task, model):
    """Loss-term regularisers over all trainable parameters (seed 001's L1, seed 003's L2)."""
    l1, l2 = task.protocol.l1, task.protocol.l2
    if not (l1 or l2):
        return None
    params = [p for p in model.parameters() if not p.stop_gradient]
    reg = 0.0
    if l1:
        reg = reg + l1 * sum(p.abs().sum() for p in params)
    if l2:
        reg = reg + l2 * sum((p * p).sum() for p in params)
    return reg


def forward_objective(state, xb, yb):
    """(model output, data loss, data loss + regularisers) of one batch: what a training step differentiates."""
    out = call_model(state.model, xb)
    loss = state.loss_fn(out, yb)
    reg = regularisation(state.task, state.model)
    return out, loss, (loss if reg is None else loss + reg)


def train_step(state, xb, yb):
    """One optimizer step; returns (data loss, model output), both still on the device."""
    out, loss, objective = forward_objective(state, xb, yb)
    state.optimizer.clear_grad(set_to_zero=False)
    objective.backward()
    if state.task.protocol.grad_clip:
        # torch's formula (eps 1e-6), bit-identical grads; ClipGradByGlobalNorm has no eps, so its
        # factor differs by about 1e-6/norm relative
        paddle.nn.utils.clip_grad_norm_(state.model.parameters(), state.task.protocol.grad_clip)
    state.optimizer.step()
    return loss.detach(), primary_output(out, state.task.output_leaf).detach()


def train_epoch(state, loader, on_step=None):
    """One pass over the loader in train mode; sums stay on the device until the end."""
    from dualbench.backends.paddle.data import to_device
    state.model.train()
    num_classes = state.task.num_classes
    correct = paddle.zeros([], dtype="int64")
    loss_sum, n = 0.0, 0
    for step, batch in enumerate(loader, start=1):
        xb, yb = to_device(batch, state.dev)
        loss, out = train_step(state, xb, yb)
        value = float(loss)   # one host sync per step: divergence is caught at the step it happens
        if not math.isfinite(value):
            return {"loss": loss_sum / max(n, 1), "acc": int(correct) / max(n, 1), "n": n,
                    "diverged_step": step, "bad_loss": value}
        loss_sum += value * len(yb)
        correct += (predict_classes(out, num_classes) == yb).astype("int64").sum()
        n += len(yb)
        if on_step is not None:
            on_step(len(yb))
    return {"loss": loss_sum / max(n, 1), "acc": int(correct) / max(n, 1), "n": n, "diverged_step": None}


def parameters_finite(model):
    """False when any parameter or BN statistic holds NaN/Inf."""
    return all(bool(paddle.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


@paddle.no_grad()
def evaluate(state, loader):
    from dualbench.backends.paddle.data import to_device
    state.model.eval()
    num_classes = state.task.num_classes
    loss_sum = paddle.zeros([], dtype="float64")
    correct = paddle.zeros([], dtype="int64")
    n = 0
    for batch in loader:
        xb, yb = to_device(batch, state.dev)
        out = call_model(state.model, xb)
        loss_sum += state.loss_fn(out, yb).astype("float64") * len(yb)
        out = primary_output(out, state.task.output_leaf)
        correct += (predict_classes(out, num_classes) == yb).astype("int64").sum()
        n += len(yb)
    return {"loss": float(loss_sum) / max(n, 1), "acc": int(correct) / max(n, 1), "n": n}


def output_gradient(state, loader):
    """Mean per-sample L2 norm of d(data loss)/d(output of the last Linear layer), no update.

    This is seed 000's explanation of why softmax + MSE stalls: the gradient that reaches the logits
    through the softmax is small. The loss is a batch mean, so the gradient is scaled by the batch size
    to give each sample's own gradient. Eval mode: no dropout mask is drawn, the training RNG is untouched.
    """
    from dualbench.backends.paddle.data import to_device
    last = [m for m in state.model.sublayers() if isinstance(m, paddle.nn.Linear)][-1]
    captured = {}
    handle = last.register_forward_post_hook(lambda layer, inputs, output: captured.__setitem__("z", output))
    state.model.eval()
    total, n = 0.0, 0
    try:
        for batch in loader:
            xb, yb = to_device(batch, state.dev)
            loss = state.loss_fn(call_model(state.model, xb), yb)
            (grad,) = paddle.grad(loss, captured["z"])
            total += float(paddle.linalg.norm(grad * len(yb), axis=1).sum())
            n += len(yb)
    finally:
        handle.remove()
    return total / max(n, 1)


def scheduler_step(state, val_loss=None):
    """Once per epoch, after validation (ReduceOnPlateau watches the validation loss)."""
    if state.scheduler is None:
        return
    if state.task.protocol.schedule.name == "plateau":
        state.scheduler.step(val_loss)
    else:
        state.scheduler.step()


def current_lr(state):
    return float(state.optimizer.get_lr())


@paddle.no_grad()
def predict(model, x, num_classes, dev):
    """Class predictions and raw outputs for a float32 numpy batch."""
    model.eval()
    out = model(paddle.to_tensor(x))
    return predict_classes(out, num_classes).numpy(), out.numpy()
