"""Speed helpers for benchmarks with native PaddlePaddle: to_static, AMP, pre-loaded batches, peak memory.

The mirror of backends/torch/speed.py (same public names). The timing loops themselves are
framework-blind and live in benchmarks/bench/timing.py.
"""
import contextlib

import paddle

from dualbench.backends.paddle.train import regularisation, train_step
from dualbench.common.memory import reset_rss_peak, rss_peak_mb


def _flag(name, default):
    try:
        return bool(paddle.get_flags([name])[name])
    except (ValueError, KeyError, RuntimeError):   # not registered in this build (a GPU flag on the CPU build)
        return default


# The frameworks' own defaults, read once at import, so that a cell without a knob gets the default even
# after an earlier cell in the same worker changed it.
DEFAULT_KNOBS = {"onednn": _flag("FLAGS_use_mkldnn", False),
                 "cudnn_benchmark": _flag("FLAGS_cudnn_exhaustive_search", False)}


def apply_settings(knobs, dev):
    """Set every speed switch for the next cell: the cell's value, else the default. Returns the
    effective values of the switches that matter on the device (what the row records)."""
    values = {**DEFAULT_KNOBS, **(knobs or {})}
    paddle.set_flags({"FLAGS_use_mkldnn": bool(values["onednn"])})
    if dev == "gpu":
        paddle.set_flags({"FLAGS_cudnn_exhaustive_search": bool(values["cudnn_benchmark"])})
    used = ("cudnn_benchmark",) if dev == "gpu" else ("onednn",)
    return {k: values[k] for k in used}


def compile_model(state):
    """Replace the eager model by paddle.jit.to_static(model) (dynamic-to-static; same parameters).

    The program is built lazily at the first call, so the first step's time includes it.
    """
    state.model = paddle.jit.to_static(state.model)
    return state


def amp_dtype(dev):
    """float16 on GPU (with loss scaling); bfloat16 on CPU (where paddle's auto_cast has no effect)."""
    return "float16" if dev == "gpu" else "bfloat16"


def amp_context(dev, enabled=True):
    """paddle.amp.auto_cast (level O1) for the forward pass and loss, or a no-op when disabled."""
    if not enabled:
        return contextlib.nullcontext()
    return paddle.amp.auto_cast(enable=True, level="O1", dtype=amp_dtype(dev))


def make_scaler(dev, enabled=True):
    """A GradScaler for float16 on GPU; None where no scaling is needed (disabled, or CPU)."""
    if not enabled or dev != "gpu":
        return None
    return paddle.amp.GradScaler(init_loss_scaling=2.0 ** 16)


def make_step(state, amp=False):
    """The train-step function (state, xb, yb) -> (loss, output) for a precision.

    fp32 is the backend's own train_step (what `dualbench run` uses). AMP runs the same step under
    auto_cast, with GradScaler on GPU (unscaling before gradient clipping, as the AMP recipe says).
    """
    if not amp:
        return train_step
    scaler = make_scaler(state.dev, True)
    clip = state.task.protocol.grad_clip

    def amp_train_step(state, xb, yb):
        with amp_context(state.dev, True):
            out = state.model(xb)
            loss = state.loss_fn(out, yb)
        reg = regularisation(state.task, state.model)
        objective = loss.astype("float32") if reg is None else loss.astype("float32") + reg
        state.optimizer.clear_grad(set_to_zero=False)
        if scaler is None:
            objective.backward()
            if clip:
                paddle.nn.utils.clip_grad_norm_(state.model.parameters(), clip)
            state.optimizer.step()
        else:
            scaler.scale(objective).backward()
            if clip:
                scaler.unscale_(state.optimizer)
                paddle.nn.utils.clip_grad_norm_(state.model.parameters(), clip)
            scaler.step(state.optimizer)
            scaler.update()
        return loss.detach(), out.detach()

    return amp_train_step


def make_infer_step(model):
    """Inference for one batch: eval mode (dropout off, BatchNorm running statistics), no autograd."""
    model.eval()

    @paddle.no_grad()
    def infer(xb):
        return model(xb)

    return infer


def preload(x, y, batches, dev):
    """Batches as tensors already on the device: the input of the bare loop (no reader in the timing)."""
    place = paddle.CUDAPlace(0) if dev == "gpu" else paddle.CPUPlace()
    pairs = [(paddle.to_tensor(x[idx], place=place), paddle.to_tensor(y[idx], place=place)) for idx in batches]
    if dev == "gpu":
        paddle.device.cuda.synchronize()
    return pairs


def reset_peak_memory(dev):
    """Start a new peak: the CUDA allocator's on GPU, the process RSS on CPU."""
    if dev == "gpu":
        paddle.device.cuda.reset_max_memory_allocated()
    else:
        reset_rss_peak()


def peak_memory(dev):
    """(MiB, kind): allocator peak on GPU ('gpu_allocated'), peak RSS of the process on CPU ('rss')."""
    if dev == "gpu":
        return paddle.device.cuda.max_memory_allocated() / 2 ** 20, "gpu_allocated"
    return rss_peak_mb(), "rss"
