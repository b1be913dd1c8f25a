"""Devices, threads, seeding and version info for PaddlePaddle."""
import paddle

from dualbench.common.errors import UserError
from dualbench.common.results import cpu_name


def _core():
    # paddle.base since 2.6 (paddle.fluid before): the one place that guards the difference
    return paddle.base.core if hasattr(paddle, "base") else paddle.fluid.core


def resolve_device(name="cpu"):
    """'cpu' | 'gpu' | 'auto' -> 'cpu' or 'gpu' (set as paddle's current device)."""
    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if name == "gpu" and not has_gpu:
        raise UserError("--device gpu: paddle sees no CUDA device (a CPU build, or no GPU visible)")
    return "gpu" if name in ("gpu", "auto") and has_gpu else "cpu"


def configure(threads, device="cpu", deterministic=False):
    """Pin math threads and pick the device; returns what to record in result rows."""
    paddle.set_flags({"FLAGS_paddle_num_threads": threads})
    _core().set_num_threads(threads)
    dev = resolve_device(device)
    paddle.set_device(dev)
    if deterministic:
        paddle.set_flags({"FLAGS_cudnn_deterministic": True})
    return dev, describe(dev, threads)


def describe(dev, threads=None):
    name = paddle.device.cuda.get_device_name() if dev == "gpu" else cpu_name()
    if threads is None:
        threads = paddle.get_flags(["FLAGS_paddle_num_threads"])["FLAGS_paddle_num_threads"]
    return {"framework_version": paddle.__version__, "device": dev, "device_name": name, "threads": threads}


def seed(value):
    """Seed paddle's generators (numpy draws nothing in the training path)."""
    paddle.seed(value)


def synchronize(dev):
    if dev == "gpu":
        paddle.device.cuda.synchronize()
