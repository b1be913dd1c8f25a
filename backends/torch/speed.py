"""Speed helpers for benchmarks with native PyTorch: compile, AMP, pre-loaded batches, peak memory.

The mirror of backends/paddle/speed.py (same public names). The timing loops themselves are
framework-blind and live in benchmarks/bench/timing.py.
"""
import contextlib

import torch

from dualbench.backends.torch.train import regularisation, train_step
from dualbench.common.memory import reset_rss_peak, rss_peak_mb


# The frameworks' own defaults, read once at import, so that a cell without a knob gets the default even
# after an earlier cell in the same worker changed it.
DEFAULT_KNOBS = {"onednn": torch.backends.mkldnn.enabled, "cudnn_benchmark": torch.backends.cudnn.benchmark,
                 "tf32": torch.backends.cuda.matmul.allow_tf32}


def apply_settings(knobs, dev):
    """Set every speed switch for the next cell: the cell's value, else the default. Returns the
    effective values of the switches that matter on the device (what the row records)."""
    values = {**DEFAULT_KNOBS, **(knobs or {})}
    torch.backends.mkldnn.enabled = bool(values["onednn"])
    torch.backends.cudnn.benchmark = bool(values["cudnn_benchmark"])
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(values["tf32"])
    used = ("cudnn_benchmark", "tf32") if dev.type == "cuda" else ("onednn",)
    return {k: values[k] for k in used}


def compile_model(state):
    """Replace the eager model by torch.compile(model) (parameters are shared, so the optimizer still fits).

    Compilation happens lazily at the first call, so the first step's time includes it.
    """
    state.model = torch.compile(state.model)
    return state


def amp_dtype(dev):
    """float16 on GPU (with loss scaling); bfloat16 on CPU, the only autocast type torch offers there."""
    return torch.float16 if dev.type == "cuda" else torch.bfloat16


def amp_context(dev, enabled=True):
    """torch.autocast for the forward pass and loss, or a no-op when disabled."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev.type, dtype=amp_dtype(dev))


def make_scaler(dev, enabled=True):
    """A GradScaler for float16 on GPU; None where no scaling is needed (disabled, or bfloat16 on CPU)."""
    if not enabled or dev.type != "cuda":
        return None
    return torch.amp.GradScaler("cuda")


def make_step(state, amp=False):
    """The train-step function (state, xb, yb) -> (loss, output) for a precision.

    fp32 is the backend's own train_step (what `dualbench run` uses). AMP runs the same step under
    autocast, with GradScaler on GPU (unscaling before gradient clipping, as the AMP recipe says).
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
        objective = loss.float() if reg is None else loss.float() + reg
        state.optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            objective.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(state.model.parameters(), clip)
            state.optimizer.step()
        else:
            scaler.scale(objective).backward()
            if clip:
                scaler.unscale_(state.optimizer)
                torch.nn.utils.clip_grad_norm_(state.model.parameters(), clip)
            scaler.step(state.optimizer)
            scaler.update()
        return loss.detach(), out.detach()

    return amp_train_step


def make_infer_step(model):
    """Inference for one batch: eval mode (dropout off, BatchNorm running statistics), no autograd."""
    model.eval()

    @torch.inference_mode()
    def infer(xb):
        return model(xb)

    return infer


def preload(x, y, batches, dev):
    """Batches as tensors already on the device: the input of the bare loop (no reader in the timing)."""
    pairs = [(torch.from_numpy(x[idx]).to(dev), torch.from_numpy(y[idx]).to(dev)) for idx in batches]
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return pairs


def reset_peak_memory(dev):
    """Start a new peak: the CUDA allocator's on GPU, the process RSS on CPU."""
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    else:
        reset_rss_peak()


def peak_memory(dev):
    """(MiB, kind): allocator peak on GPU ('gpu_allocated'), peak RSS of the process on CPU ('rss')."""
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2 ** 20, "gpu_allocated"
    return rss_peak_mb(), "rss"
