"""Backends by name, imported lazily so that `common` and the CLI work with one framework missing.

The one way in: `load(name)` is a backend package (NAME, CHECKPOINT_SUFFIX and its core parts device,
models, data, weights, train as attributes), `load(name, part)` one part of it, core or not (inspect for
parity, speed for bench). What each part offers is written down in backends/interface.py; both backend
packages (`backends.torch`, `backends.paddle`) implement it module for module, with the same signatures
(tests/test_architecture.py checks them against it).
"""
import importlib
import importlib.util

from dualbench.common.errors import UserError

BACKENDS = ("torch", "paddle")
FRAMEWORK_MODULE = {"torch": "torch", "paddle": "paddle"}
INSTALL_HINT = {
    "torch": "pip install torch torchvision",
    "paddle": "pip install 'dualbench[cpu]' (or 'dualbench[gpu]' on a CUDA machine)",
}


def quiet_framework_imports():
    """Keep paddle's import-time chatter (glog, "No ccache found", a BatchNorm notice) out of the
    user's terminal, whoever imports paddle first: our backend or the user's own model file."""
    import os
    import warnings
    os.environ.setdefault("GLOG_minloglevel", "2")
    warnings.filterwarnings("ignore", message=".*ccache.*")
    # BatchNorm in train mode always tracks running statistics, as torch does; the notice is noise here
    warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")


def is_installed(name):
    try:
        return importlib.util.find_spec(FRAMEWORK_MODULE[name]) is not None
    except (ImportError, ValueError):   # ValueError: a module blocked with sys.modules[name] = None
        return False


def check_name(name):
    if name not in BACKENDS:
        raise UserError(f"unknown backend '{name}' (known: {', '.join(BACKENDS)})")
    return name


def parse_backends(text):
    names = [check_name(n.strip()) for n in text.split(",") if n.strip()]
    if not names:
        raise UserError("no backend given (use torch, paddle or torch,paddle)")
    return names


def require(name):
    """Check, without importing it, that a backend's framework is installed (one-line UserError)."""
    check_name(name)
    if not is_installed(name):
        raise UserError(f"backend '{name}' needs {FRAMEWORK_MODULE[name]}, which is not installed: "
                        f"{INSTALL_HINT[name]}")
    return name


def load(name, part=None):
    """The backend package, or one of its parts (interface.PARTS); a missing framework is a one-line
    UserError naming the extra."""
    from dualbench.backends.interface import PARTS
    require(name)
    package = importlib.import_module(f"dualbench.backends.{name}")
    if part is None:
        return package
    if part not in PARTS:
        raise ValueError(f"unknown backend part {part!r} (parts: {', '.join(PARTS)})")
    return importlib.import_module(f"{package.__name__}.{part}")
