"""The optimizer conventions that differ between torch and paddle ports, replayed in numpy.

An update is replayed from the captured parameters and raw gradients of every step up to the one
that differs, under torch's settings (which must reproduce torch's update) and with one convention
flipped; a flip that reproduces paddle's update is a proven cause. The rules, as both frameworks
implement them:

- SGD: p -= lr * g. Momentum (torch SGD(momentum), paddle Momentum): b = mu * b + (1 - dampening) * g
  (the first step takes b = g), p -= lr * b, or with Nesterov p -= lr * (g + mu * b). paddle has no
  dampening.
- Adam: m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2, p -= lr * m^ / (sqrt(v^) + eps) with bias-corrected
  m^, v^. paddle folds the correction into lr and eps (algebraically the same).
- weight decay: coupled (torch SGD/Adam weight_decay, paddle weight_decay=float or L2Decay): g += c * p;
  decoupled (AdamW in both): p *= 1 - lr * c, with c = 0.01 when AdamW is given none.
- clipping: torch clip_grad_norm_ (and paddle.nn.utils.clip_grad_norm_) scale every gradient by
  max_norm / (global norm + 1e-6) when above; paddle's ClipGradByGlobalNorm by
  clip / max(global norm, clip), no epsilon; ClipGradByNorm clips each tensor by its own norm.
- learning-rate schedules are stepped once per epoch in both; a port stepping per step, or once
  before training, uses another rate.
No torch, no paddle here.
"""
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Settings:
    name: str                       # sgd | momentum | adam
    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    decay: str = "coupled"          # coupled | decoupled
    clip: Optional[float] = None
    clip_rule: str = "global_eps"   # global_eps | global | tensor_eps | tensor
    lr_rule: str = "per_epoch"      # per_epoch | per_step | before_training
    schedule: tuple = ()            # ("step", step_size, gamma) when the task has StepLR


def settings_of(protocol):
    """torch's side of a task's protocol (common.tasks.Protocol) as Settings."""
    opt, sched = protocol.optimizer, protocol.schedule
    return Settings(opt.name, opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay, clip=protocol.grad_clip,
                    schedule=("step", sched.step_size, sched.gamma) if sched.name == "step" else ())


def learning_rate(settings, step):
    """The rate used at step `step` (1-based) of the first epoch under the settings' lr rule."""
    if not settings.schedule or settings.lr_rule == "per_epoch":
        return settings.lr
    _, size, gamma = settings.schedule
    epoch = step - 1 if settings.lr_rule == "per_step" else 1   # scheduler.step() calls so far
    return settings.lr * gamma ** (epoch // size)


def clip_factors(settings, grads, norm):
    """{name: factor} the clipping rule applies to each gradient (1 where no clipping)."""
    if not settings.clip:
        return {name: 1.0 for name in grads}
    if settings.clip_rule.startswith("global"):
        eps = settings.clip_rule == "global_eps"
        factor = min(1.0, settings.clip / (norm + 1e-6)) if eps else settings.clip / max(norm, settings.clip)
        return {name: factor for name in grads}
    out = {}
    for name, g in grads.items():
        own = float(np.sqrt((np.asarray(g, np.float64) ** 2).sum()))
        out[name] = min(1.0, settings.clip / (own + 1e-6)) if settings.clip_rule == "tensor_eps" else \
            settings.clip / max(own, settings.clip)
    return out


def updates(settings, params, grads, norms):
    """The update p_{k+1} - p_k at every step, replayed: params[k] and grads[k] are {name: array}
    before step k+1 (raw gradients of the objective), norms[k] the global gradient norm."""
    state, out = {}, []
    for k, (p_k, g_k) in enumerate(zip(params, grads)):
        t = k + 1
        lr = learning_rate(settings, t)
        factors = clip_factors(settings, g_k, norms[k])
        step = {}
        for name, p in p_k.items():
            p = np.asarray(p, np.float64)
            g = np.asarray(g_k[name], np.float64) * factors[name]
            if settings.weight_decay and settings.decay == "coupled":
                g = g + settings.weight_decay * p
            new = p * (1 - lr * settings.weight_decay) if settings.weight_decay and settings.decay == "decoupled" else p
            s = state.setdefault(name, {})
            if settings.name == "adam":
                b1, b2 = settings.betas
                s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
                s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
                m_hat, v_hat = s["m"] / (1 - b1 ** t), s["v"] / (1 - b2 ** t)
                new = new - lr * m_hat / (np.sqrt(v_hat) + settings.eps)
            elif settings.name == "momentum":
                s["b"] = g if "b" not in s else settings.momentum * s["b"] + (1 - settings.dampening) * g
                new = new - lr * (g + settings.momentum * s["b"] if settings.nesterov else s["b"])
            else:
                new = new - lr * g
            step[name] = new - p
        out.append(step)
    return out


@dataclass(frozen=True)
class Flip:
    key: str
    title: str
    torch: str
    paddle: str
    fix: str
    settings: Settings


def flips(base):
    """Single convention flips of torch's settings that a port could have made."""
    out = []

    def add(key, title, torch, paddle, fix, **changes):
        out.append(Flip(key, title, torch, paddle, fix, replace(base, **changes)))

    if base.weight_decay:
        other = "decoupled" if base.decay == "coupled" else "coupled"
        add("decay", "weight decay coupled vs decoupled", "Adam/SGD(weight_decay=c) adds c*w to the gradient",
            "the same with weight_decay=c (L2Decay); AdamW multiplies w by (1 - lr*c)",
            "use Adam with weight_decay (coupled) in both, or AdamW in both", decay=other)
    if base.name == "adam":
        if not base.weight_decay:
            add("adamw_default", "AdamW's default decoupled decay", "Adam: no decay unless weight_decay is given",
                "AdamW decays by 0.01 even when no weight_decay is given (torch's AdamW too)",
                "port Adam as Adam, or give AdamW weight_decay=0.0", weight_decay=0.01, decay="decoupled")
        for eps in (1e-7, 1e-6, 1e-5, 1e-4, 1e-3):
            if eps != base.eps:
                add("eps", "Adam epsilon", f"eps {base.eps:g} (default 1e-8)", "epsilon 1e-8 by default",
                    f"give paddle's Adam epsilon={base.eps:g}", eps=eps)
        for betas in ((0.9, 0.99), (0.9, 0.98), (0.95, 0.999), (0.8, 0.999), (0.9, 0.9999)):
            if betas != base.betas:
                add("betas", "Adam betas", f"betas {base.betas}", "beta1 0.9, beta2 0.999 by default",
                    f"give paddle's Adam beta1={base.betas[0]:g}, beta2={base.betas[1]:g}", betas=betas)
    if base.name == "momentum":
        add("nesterov", "Nesterov momentum", f"nesterov={base.nesterov}", "use_nesterov=False by default",
            f"set paddle's use_nesterov={base.nesterov}", nesterov=not base.nesterov)
        add("dampening", "momentum dampening", f"dampening={base.dampening:g} (default 0)",
            "Momentum has no dampening", "keep torch's dampening at 0 (paddle cannot dampen)",
            dampening=base.momentum if not base.dampening else 0.0)
    if base.clip:
        words = {"global": "ClipGradByGlobalNorm: clip / max(norm, clip), no epsilon",
                 "tensor_eps": "each tensor clipped by its own norm (with epsilon)",
                 "tensor": "ClipGradByNorm: each tensor clipped by its own norm, no epsilon"}
        for rule, paddle in words.items():
            title = "gradient-clipping epsilon" if rule == "global" else "per-tensor instead of global clipping"
            add("clip_rule", title, "clip_grad_norm_: max_norm / (global norm + 1e-6)", paddle,
                "clip the global norm with torch's formula: paddle.nn.utils.clip_grad_norm_ between backward "
                "and step (or ClipGradByGlobalNorm, accepting its epsilon-free formula)", clip_rule=rule)
    if base.schedule:
        add("lr_rule", "learning-rate schedule stepped per step", "scheduler.step() once per epoch",
            "lr.step() once per epoch", "step the scheduler once per epoch, after the epoch", lr_rule="per_step")
        add("lr_rule", "learning-rate schedule off by one", "scheduler.step() after each epoch",
            "lr.step() after each epoch", "do not step the scheduler before the first epoch",
            lr_rule="before_training")
    return out


def _misfit(update, observed, settings, grads):
    """max |update - observed| relative to the update's size; Adam on well-conditioned elements
    (|g| near eps turns rounding into steps of up to lr)."""
    worst = 0.0
    for name, u in update.items():
        u, o = np.asarray(u, np.float64), np.asarray(observed[name], np.float64)
        if settings.name == "adam":
            g = np.abs(np.asarray(grads[name], np.float64))
            keep = g > 1e-3 * max(g.max(), 1e-30)
            u, o = u[keep], o[keep]
        if u.size:
            worst = max(worst, float(np.abs(u - o).max()) / max(float(np.abs(u).max()), 1e-30))
    return worst


def replay(base, params, grads, norms, torch_update, paddle_update, rtol):
    """[(Flip, misfit, side)] of the flips whose replayed update at the last step reproduces one side's
    update (within rtol of the update's size) while the base settings reproduce the other's; side is
    the one that deviates (usually paddle: a port; torch when the torch model is the odd one).
    None when the base settings reproduce neither side."""
    base_update = updates(base, params, grads, norms)[-1]
    if _misfit(base_update, torch_update, base, grads[-1]) <= rtol:
        odd, observed = "paddle", paddle_update
    elif _misfit(base_update, paddle_update, base, grads[-1]) <= rtol:
        odd, observed = "torch", torch_update
    else:
        return None
    found = []
    for flip in flips(base):
        misfit = _misfit(updates(flip.settings, params, grads, norms)[-1], observed, flip.settings, grads[-1])
        if misfit <= rtol:
            found.append((flip, misfit, odd))
    return found


# The same conventions in words, for the docs and the report: (title, torch, paddle, fix)
DOCS = [
    ("weight decay coupled vs decoupled", "Adam/SGD(weight_decay=c): g += c*w; AdamW: w *= 1 - lr*c",
     "Adam/SGD(weight_decay=c or L2Decay(c)): g += c*w; AdamW: w *= 1 - lr*c",
     "use the same optimizer class in both (Adam with Adam, AdamW with AdamW)"),
    ("AdamW's default decoupled decay", "AdamW weight_decay=0.01 by default", "AdamW weight_decay=0.01 by default",
     "port Adam as Adam, or give AdamW weight_decay=0.0"),
    ("Adam epsilon", "eps=1e-8, added to sqrt(v^)", "epsilon=1e-8 (scaled by sqrt(1 - b2^t) inside: the same)",
     "give both the same epsilon"),
    ("Adam betas", "betas=(0.9, 0.999)", "beta1=0.9, beta2=0.999", "give both the same betas"),
    ("Nesterov momentum", "SGD(nesterov=False)", "Momentum(use_nesterov=False)", "set both the same way"),
    ("momentum dampening", "SGD(dampening=0)", "Momentum has no dampening", "keep torch's dampening at 0"),
    ("gradient-clipping epsilon", "clip_grad_norm_: max_norm / (norm + 1e-6)",
     "ClipGradByGlobalNorm: clip / max(norm, clip), no epsilon",
     "paddle.nn.utils.clip_grad_norm_ (torch's formula) between backward and step"),
    ("per-tensor instead of global clipping", "clip_grad_norm_ clips the global norm",
     "ClipGradByNorm clips each tensor by its own norm", "clip the global norm (ClipGradByGlobalNorm or clip_grad_norm_)"),
    ("learning-rate schedule stepped per step", "scheduler.step() once per epoch", "lr.step() once per epoch",
     "step the scheduler once per epoch"),
    ("learning-rate schedule off by one", "scheduler.step() after each epoch", "lr.step() after each epoch",
     "do not step the scheduler before the first epoch"),
]
