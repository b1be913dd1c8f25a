"""The converted model, and the parity check of the pair (the torch file's model, PaConvert's paddle model).

The paddle file is first imported and its model built here, so that an error raised by the converted code
keeps its traceback: an AttributeError that names a paddle module (`module 'paddle.nn' has no attribute
'MaxPool2d'`) becomes one line naming the API, the installed paddle's version and the line of the paddle
file; any other error raised by the converted code, one line naming its line. The check itself is the
`dualbench parity --torch SPEC --paddle SPEC` command's code, given the paddle file's SPEC and the options
port was given, parsed by parity's own parser: port follows whatever the parity command does.
"""
import argparse
import json
import re
import traceback
from pathlib import Path

from dualbench.common.errors import UserError
from dualbench.model_loader import find_attribute, import_file, one_line
from dualbench.port.convert import release_hint

MISSING_MODULE_ATTR = re.compile(r"module '(paddle(?:\.\w+)*)' has no attribute '(\w+)'")
MISSING_TENSOR_ATTR = re.compile(r"'(Tensor|EagerParamBase)' object has no attribute '(\w+)'")


def missing_api(text, code_line=None):
    """The paddle API an AttributeError's message says is missing (paddle.nn.MaxPool2d), or None. When the
    missing part is a module (paddle.compat on an older paddle), the longest dotted name on the code line that
    starts with it (paddle.compat.nn.Linear)."""
    match = MISSING_MODULE_ATTR.search(text)
    if match:
        api = f"{match.group(1)}.{match.group(2)}"
        longer = re.findall(re.escape(api) + r"(?:\.\w+)*", code_line or "")
        return max(longer, key=len) if longer else api
    match = MISSING_TENSOR_ATTR.search(text)
    return f"paddle.Tensor.{match.group(2)}" if match else None


def missing_api_error(api, where, paddle_version, paconvert_version):
    return UserError(f"the converted code calls {api}, which paddle {paddle_version} does not have ({where}; "
                     f"written by PaConvert {paconvert_version}{release_hint(paconvert_version)})")


def converted_error(error, conversion, paddle_version):
    """A one-line UserError for an exception the converted code raised, or None when it was raised elsewhere."""
    path = conversion.paddle_file.resolve()
    if isinstance(error, SyntaxError) and error.filename and Path(error.filename).resolve() == path:
        return UserError(f"{conversion.paddle_file}:{error.lineno} does not parse ({error.msg}: "
                         f"{(error.text or '').strip()[:120]})")
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() == path]
    if not frames:
        return None
    frame = frames[-1]
    where = f"{conversion.paddle_file}:{frame.lineno}"
    api = missing_api(str(error), frame.line) if isinstance(error, AttributeError) else None
    if api:
        return missing_api_error(api, where, paddle_version, conversion.version)
    return UserError(f"the converted code fails at {where} ({(frame.line or '').strip()[:120]}): {one_line(error)}")


def import_converted(conversion, paddle_version):
    """The paddle file as a module, imported the way `dualbench parity` imports it (model_loader.import_file:
    the same module, so its code runs once); errors as one line."""
    try:
        return import_file(conversion.paddle_file)
    except Exception as e:  # noqa: BLE001 - whatever the converted code raises is reported in one line
        raise (converted_error(e, conversion, paddle_version) or
               UserError(f"{conversion.paddle_file}: importing it failed ({one_line(e)})")) from None


def probe_converted(conversion, spec, paddle_version):
    """Import the paddle file and build its model once, here, so that what the converted code raises is
    reported with its line (through model_loader it would be one line without it)."""
    from dualbench import backends
    inspect = backends.load("paddle", "inspect")
    module = import_converted(conversion, paddle_version)
    try:
        build = find_attribute(module, spec.attr)
    except AttributeError:
        raise UserError(f"{conversion.paddle_file}: PaConvert's output has no '{spec.attr}'") from None
    try:
        model = build(**spec.kwargs)
    except Exception as e:  # noqa: BLE001 - the converted builder failed: say where, in one line
        raise (converted_error(e, conversion, paddle_version) or
               UserError(f"{conversion.paddle_file}: calling {spec.attr}(**{spec.kwargs}) failed "
                         f"({one_line(e)})")) from None
    if not inspect.is_model(model):
        raise UserError(f"{conversion.paddle_file}: {spec.attr} returned a {type(model).__module__}."
                        f"{type(model).__name__}, not a paddle.nn.Layer")


def paddle_spec(conversion, spec):
    """The SPEC of the converted model, for `dualbench parity`."""
    kwargs = f":{json.dumps(spec.kwargs)}" if spec.kwargs else ""
    return f"{conversion.paddle_file}:{spec.attr}{kwargs}"


class _ParityParser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(f"dualbench parity refused the options dualbench port passed on: {message}")


def parity_arguments(argv):
    """`dualbench parity ARGV` parsed by the parity command's own parser: every option it has, with its default."""
    from dualbench.parity.cli import register
    parser = _ParityParser(prog="dualbench")
    register(parser.add_subparsers(dest="command", parser_class=_ParityParser))
    return parser.parse_args(["parity", *argv])


def check_pair(conversion, spec, argv):
    """`dualbench parity --torch SPEC --paddle <the paddle file>:CALLABLE ARGV`, in this process: the parity
    command's own code, output and exit (SystemExit(1) when the pair fails). The converted model is built
    once first; what the converted code raises there or in the checks is one line."""
    from dualbench import backends
    from dualbench.parity.cli import cmd_parity
    paddle_version = backends.load("paddle", "inspect").framework_version()
    probe_converted(conversion, spec, paddle_version)
    args = parity_arguments(["--torch", spec.text, "--paddle", paddle_spec(conversion, spec), *argv])
    try:
        cmd_parity(args)
    except UserError:   # parity's own one-line errors, as they are
        raise
    except Exception as e:  # noqa: BLE001 - only the converted code's own errors are turned into one line
        problem = converted_error(e, conversion, paddle_version)
        if problem is None:
            raise
        raise problem from None
