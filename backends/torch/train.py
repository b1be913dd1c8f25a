"""Training and evaluation with native PyTorch: loss, optimizer, scheduler, clipping, one epoch.

The epoch loop around these functions (early stopping, best checkpoint, rows) is framework-blind
and lives in benchmarks/engine.py; everything here is the torch side of one step.
"""
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from dualbench.common.nested import nested_leaves


@dataclass
class TrainState:
    task: object
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Optional[object]
    loss_fn: Callable
    dev: torch.device


def primary_output(value, leaf=0):
    """The tensor a loss is computed on: the output itself, or the leaf-th tensor (0: the first) of a
    tuple/list/dict output, in flattened order (models that also return states or attention weights)."""
    leaves = [t for _, t in nested_leaves(value, lambda v: isinstance(v, torch.Tensor))]
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
        "ce": F.cross_entropy,   # class axis 1; float targets of the output's shape are probabilities
        "mse_value": lambda out, y: F.mse_loss(out.squeeze(1), y.to(out.dtype)),
        "mse_onehot": lambda out, y: F.mse_loss(out, F.one_hot(y, out.shape[1]).to(out.dtype)),
        "mse": lambda out, y: F.mse_loss(out, y.to(out.dtype)),
        "sum": lambda out, y: out.sum(),
        # classes on the last axis ([N, T, V] outputs, [N, T] labels), the mean over every position
        "ce_last": lambda out, y: F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1)),
    }
    if task.loss not in losses:
        raise ValueError(f"unknown loss {task.loss!r}")
    loss, leaf = losses[task.loss], task.output_leaf
    return lambda out, y: loss(primary_output(out, leaf), y)


def predict_classes(out, num_classes):
    """argmax for class scores; rounded value (clipped to the classes) for a 1-output regressor."""
    if out.shape[1] == 1:
        return out.squeeze(1).round().clamp(0, num_classes - 1).long()
    return out.argmax(1)


def make_optimizer(task, model, learning_rate=None):
    """learning_rate: default the task's (torch's schedulers wrap the optimizer afterwards)."""
    opt = task.protocol.optimizer
    lr = opt.lr if learning_rate is None else learning_rate
    params = [p for p in model.parameters() if p.requires_grad]
    if opt.name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=opt.weight_decay)
    if opt.name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    if opt.name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=opt.weight_decay)
    raise ValueError(f"unknown optimizer {opt.name!r}")


def make_scheduler(task, optimizer=None):
    """torch's scheduler wraps the optimizer (needed here, unlike paddle's)."""
    sched = task.protocol.schedule
    if sched.name == "none":
        return None
    if sched.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=sched.step_size, gamma=sched.gamma)
    if sched.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=sched.factor,
                                                          patience=sched.patience, cooldown=0)
    raise ValueError(f"unknown schedule {sched.name!r}")


def make_state(task, model, dev):
    model.to(dev)
    optimizer = make_optimizer(task, model)
    return TrainState(task, model, optimizer, make_scheduler(task, optimizer), make_loss(task), dev)


def regularisation(task, model):
    """Loss-term regularisers over all trainable parameters (seed 001's L1, seed 003's L2)."""
    l1, l2 = task.protocol.l1, task.protocol.l2
    if not (l1 or l2):
        return None
    params = [p for p in model.parameters() if p.requires_grad]
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
    state.optimizer.zero_grad(set_to_none=True)
    objective.backward()
    if state.task.protocol.grad_clip:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), state.task.protocol.grad_clip)
    state.optimizer.step()
    return loss.detach(), primary_output(out, state.task.output_leaf).detach()


def train_epoch(state, loader, on_step=None):
    """One pass over the loader in train mode; sums stay on the device until the end."""
    from dualbench.backends.torch.data import to_device
    state.model.train()
    num_classes = state.task.num_classes
    correct = torch.zeros((), dtype=torch.int64, device=state.dev)
    loss_sum, n = 0.0, 0
    for step, batch in enumerate(loader, start=1):
        xb, yb = to_device(batch, state.dev)
        loss, out = train_step(state, xb, yb)
        value = loss.item()   # one host sync per step: divergence is caught at the step it happens
        if not math.isfinite(value):
            return {"loss": loss_sum / max(n, 1), "acc": correct.item() / max(n, 1), "n": n,
                    "diverged_step": step, "bad_loss": value}
        loss_sum += value * len(yb)
        correct += (predict_classes(out, num_classes) == yb).sum()
        n += len(yb)
        if on_step is not None:
            on_step(len(yb))
    return {"loss": loss_sum / max(n, 1), "acc": correct.item() / max(n, 1), "n": n, "diverged_step": None}


def parameters_finite(model):
    """False when any parameter or BN statistic holds NaN/Inf."""
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


@torch.no_grad()
def evaluate(state, loader):
    from dualbench.backends.torch.data import to_device
    state.model.eval()
    num_classes = state.task.num_classes
    loss_sum = torch.zeros((), dtype=torch.float64, device=state.dev)
    correct = torch.zeros((), dtype=torch.int64, device=state.dev)
    n = 0
    for batch in loader:
        xb, yb = to_device(batch, state.dev)
        out = call_model(state.model, xb)
        loss_sum += state.loss_fn(out, yb) * len(yb)
        out = primary_output(out, state.task.output_leaf)
        correct += (predict_classes(out, num_classes) == yb).sum()
        n += len(yb)
    return {"loss": loss_sum.item() / max(n, 1), "acc": correct.item() / max(n, 1), "n": n}


def output_gradient(state, loader):
    """Mean per-sample L2 norm of d(data loss)/d(output of the last Linear layer), no update.

    This is seed 000's explanation of why softmax + MSE stalls: the gradient that reaches the logits
    through the softmax is small. The loss is a batch mean, so the gradient is scaled by the batch size
    to give each sample's own gradient. Eval mode: no dropout mask is drawn, the training RNG is untouched.
    """
    from dualbench.backends.torch.data import to_device
    last = [m for m in state.model.modules() if isinstance(m, torch.nn.Linear)][-1]
    captured = {}
    handle = last.register_forward_hook(lambda module, inputs, output: captured.__setitem__("z", output))
    state.model.eval()
    total, n = 0.0, 0
    try:
        for batch in loader:
            xb, yb = to_device(batch, state.dev)
            loss = state.loss_fn(call_model(state.model, xb), yb)
            (grad,) = torch.autograd.grad(loss, captured["z"])
            total += float((grad * len(yb)).norm(dim=1).sum())
            n += len(yb)
    finally:
        handle.remove()
    return total / max(n, 1)


def scheduler_step(state, val_loss=None):
    """Once per epoch, after validation (ReduceLROnPlateau watches the validation loss)."""
    if state.scheduler is None:
        return
    if state.task.protocol.schedule.name == "plateau":
        state.scheduler.step(val_loss)
    else:
        state.scheduler.step()


def current_lr(state):
    return float(state.optimizer.param_groups[0]["lr"])


@torch.no_grad()
def predict(model, x, num_classes, dev):
    """Class predictions and raw outputs for a float32 numpy batch."""
    model.eval()
    out = model(torch.from_numpy(x).to(dev))
    return predict_classes(out, num_classes).cpu().numpy(), out.cpu().numpy()
