"""Devices, threads, seeding and version info for PyTorch."""
import torch

from dualbench.common.errors import UserError
from dualbench.common.results import cpu_name


def resolve_device(name="cpu"):
    """'cpu' | 'gpu' | 'auto' -> torch.device."""
    has_gpu = torch.cuda.is_available()
    if name == "gpu" and not has_gpu:
        raise UserError("--device gpu: torch sees no CUDA device (torch.cuda.is_available() is False)")
    return torch.device("cuda" if name in ("gpu", "auto") and has_gpu else "cpu")


def configure(threads, device="cpu", deterministic=False):
    """Pin math threads and pick the device; returns what to record in result rows."""
    torch.set_num_threads(threads)
    dev = resolve_device(device)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return dev, describe(dev)


def describe(dev, threads=None):
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()
    return {"framework_version": torch.__version__, "device": "gpu" if dev.type == "cuda" else "cpu",
            "device_name": name, "threads": torch.get_num_threads() if threads is None else threads}


def seed(value):
    """Seed torch's generators (numpy draws nothing in the training path)."""
    torch.manual_seed(value)


def synchronize(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
