"""A user's model from a SPEC string, for `dualbench parity`, `convert` and `bench` model pairs.

SPEC is `package.module:callable` or `path/to/file.py:callable`, either optionally followed by
`:{JSON keyword arguments}`, e.g. `torchvision.models:resnet18:{"num_classes": 10}`. The callable
(a function or a class) is called with those keyword arguments and must return a model of the
framework it is given for: a torch.nn.Module for --torch, a paddle.nn.Layer for --paddle. A file is
imported under a name of its own, with its folder on sys.path (so it can import its neighbours).
Every problem is a one-line UserError naming the option, the SPEC and what went wrong.
"""
import hashlib
import importlib
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from dualbench.common.errors import UserError

MODEL_TYPES = {"torch": "torch.nn.Module", "paddle": "paddle.nn.Layer"}


@dataclass(frozen=True)
class ModelSpec:
    text: str          # as given
    module: str        # module name or file path
    attr: str          # the callable, possibly dotted (Class.from_config)
    kwargs: dict

    @property
    def label(self):
        return self.attr.rsplit(".", 1)[-1]


def parse_spec(text, option="--torch"):
    """'module:callable[:{json}]' -> ModelSpec (the JSON may itself contain colons)."""
    usage = (f"{option} '{text}': expected MODULE:CALLABLE or FILE.py:CALLABLE, optionally followed by "
             ":{JSON keyword arguments}, e.g. torchvision.models:resnet18:{\"num_classes\": 10}")
    module, sep, rest = (text or "").partition(":")
    attr, _, kwargs_text = rest.partition(":")
    if not sep or not module.strip() or not attr.strip():
        raise UserError(usage)
    kwargs = {}
    if kwargs_text.strip():
        try:
            kwargs = json.loads(kwargs_text)
        except json.JSONDecodeError as e:
            raise UserError(f"{option} '{text}': the keyword arguments are not JSON ({e.msg} at column {e.colno})") \
                from None
        if not isinstance(kwargs, dict):
            raise UserError(f"{option} '{text}': the keyword arguments must be a JSON object, got {kwargs_text}")
    return ModelSpec(text, module.strip(), attr.strip(), kwargs)


def _is_file(module):
    return module.endswith(".py") or "/" in module or "\\" in module


def _import(spec, option):
    what = f"{option} '{spec.text}'"
    if _is_file(spec.module):
        path = Path(spec.module).expanduser().resolve()
        if not path.is_file():
            raise UserError(f"{what}: no such file {spec.module}")
        try:
            return import_file(path)
        except Exception as e:  # noqa: BLE001 - any error in the user's file is theirs to see, in one line
            raise UserError(f"{what}: importing {spec.module} failed ({one_line(e)})") from None
    try:
        return importlib.import_module(spec.module)
    except Exception as e:  # noqa: BLE001 - ModuleNotFoundError, or the module's own error
        raise UserError(f"{what}: cannot import {spec.module} ({one_line(e)})") from None


def import_file(path):
    """The Python file at `path` as a module, its code run once per process: cached under a name of its own
    (its path and content, so a changed file is imported again), with its folder on sys.path so it can import
    its neighbours. Whatever its code raises is raised as is, for the caller to word (`dualbench port`
    names the converted file's line from the traceback), and leaves nothing cached."""
    path = Path(path).expanduser().resolve()
    digest = hashlib.sha1(str(path).encode() + path.read_bytes()).hexdigest()[:8]
    name = f"dualbench_user_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception:
        del sys.modules[name]   # a half-run module is never reused
        raise
    return module


def one_line(error):
    """An exception as one line: its type and the first line of its message, at most 240 characters."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip()[:240]


def find_attribute(target, dotted):
    """target.a.b for 'a.b' (a SPEC's callable may be dotted: Class.from_config); AttributeError naming the
    first part that is missing."""
    for part in dotted.split("."):
        if not hasattr(target, part):
            raise AttributeError(part)
        target = getattr(target, part)
    return target


def resolve(spec, option="--torch"):
    """The callable a SPEC names (imports its module)."""
    module = _import(spec, option)
    try:
        target = find_attribute(module, spec.attr)
    except AttributeError:
        raise UserError(f"{option} '{spec.text}': {spec.module} has no attribute '{spec.attr}'") from None
    if not callable(target):
        raise UserError(f"{option} '{spec.text}': {spec.attr} is a {type(target).__name__}, not a callable")
    return target


def model_factory(text, framework, seed=0, option=None):
    """(factory, ModelSpec): factory() builds a fresh model from the SPEC, seeded the same each time,
    and checks that it is a model of `framework`."""
    from dualbench import backends
    option = option or f"--{framework}"
    spec = parse_spec(text, option)
    backend = backends.load(framework)
    inspect = backends.load(framework, "inspect")
    build = resolve(spec, option)

    def factory():
        backend.device.seed(seed)
        try:
            model = build(**spec.kwargs)
        except Exception as e:  # noqa: BLE001 - the user's builder failed: say how, in one line
            raise UserError(f"{option} '{spec.text}': calling {spec.attr}(**{spec.kwargs}) failed "
                            f"({one_line(e)})") from None
        if not inspect.is_model(model):
            other = next((f for f in MODEL_TYPES if f != framework and backends.is_installed(f) and
                          backends.load(f, "inspect").is_model(model)), None)
            got = f"a {MODEL_TYPES[other]}" if other else f"a {type(model).__module__}.{type(model).__name__}"
            raise UserError(f"{option} '{spec.text}': {spec.attr} returned {got}, not a {MODEL_TYPES[framework]}")
        return model

    return factory, spec


def parse_shape(text, option="--input"):
    """'2,3,224,224' -> (2, 3, 224, 224); every dimension a positive integer."""
    try:
        shape = tuple(int(v) for v in str(text).replace("x", ",").split(",") if v.strip())
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise UserError(f"{option} '{text}': expected positive integers separated by commas, e.g. 2,3,224,224")
    return shape
