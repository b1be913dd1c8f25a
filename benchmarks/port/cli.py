"""`dualbench port FILE.py:CALLABLE`: PaConvert on a torch file, then the parity check of the pair.

Exit 0: the pair passes; 1: it fails or is inconclusive; 2: a usage error, a conversion PaConvert could not
finish (a line it could not convert), or a converted model that does not build or run (one line, no traceback).
"""
from pathlib import Path


from dualbench.common.errors import UserError

DEFAULT_OUT = Path("runs/port")


def register(subparsers):
    p = subparsers.add_parser("port", help="convert a torch model file to paddle with PaConvert (the extra "
                              "dualbench[port]), list what it could not convert, and check the pair's parity")
    p.add_argument("spec", metavar="FILE.py:CALLABLE",
                   help="the torch model: a file and the callable that returns the model, optionally "
                        ":{JSON keyword arguments}, e.g. model.py:Net or 'model.py:Net:{\"classes\": 10}'")
    p.add_argument("--input", metavar="SHAPE", help="random input of this shape, e.g. 2,3,32,32")
    p.add_argument("--inputs", type=Path, metavar="FILE.npz",
                   help="inputs from a .npz (its arrays in order; one named y or labels is the labels)")
    p.add_argument("--loss", choices=["ce", "mse", "sum"],
                   help="loss for gradients and steps (default: ce for [N, C] outputs, else mse)")
    p.add_argument("--classes", type=int, help="--loss ce: random labels in [0, N) (default: C)")
    p.add_argument("--steps", "--train-steps", dest="steps", type=int, help="optimizer steps to compare (3)")
    p.add_argument("--optimizer", choices=["sgd", "momentum", "adam"], help="default sgd")
    p.add_argument("--lr", type=float, help="learning rate (default 0.01, adam 0.001)")
    p.add_argument("--mapping", type=Path, metavar="FILE",
                   help="module/tensor mapping to use instead of matching (edit OUT/mapping.json)")
    p.add_argument("--weights", choices=["torch", "paddle", "random"], default="torch",
                   help="start both from torch's weights (default), paddle's, or the same random canonical weights")
    p.add_argument("--atol", type=float, help="absolute tolerance for every float32 check (default: per check)")
    p.add_argument("--rtol", type=float, help="relative tolerance for every float32 check (default: per check)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-float64", action="store_true", help="never repeat the training steps in float64")
    p.add_argument("--float64", action="store_true", help="always repeat in float64 (default: when a check fails)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"output folder (default {DEFAULT_OUT}): the paddle file, unconverted.txt, paconvert.log, "
                        "mapping.json, parity.csv, parity.md")
    p.set_defaults(func=cmd_port)


def check_options(args):
    """Every option's problem as a one-line UserError, before anything is converted or written."""
    from dualbench.parity.cli import check_common, check_pair_options
    check_common(args)
    check_pair_options(args)
    if args.mapping is not None and not args.mapping.is_file():
        raise UserError(f"--mapping {args.mapping}: no such file")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out}: exists and is not a folder")


def torch_spec(args):
    """The positional SPEC as a ModelSpec; it must name a .py file that exists (nothing is imported yet)."""
    from dualbench.model_loader import parse_spec
    spec = parse_spec(args.spec, "dualbench port")
    if not spec.module.endswith(".py"):
        raise UserError(f"dualbench port '{args.spec}': expected FILE.py:CALLABLE (PaConvert converts source files; "
                        "for two installed models use dualbench parity --torch SPEC --paddle SPEC)")
    if not Path(spec.module).expanduser().is_file():
        raise UserError(f"dualbench port '{args.spec}': no such file {spec.module}")
    return spec


def parity_command(args, conversion, spec):
    """The `dualbench parity` command that checks the pair once the paddle file is fixed by hand."""
    import shlex

    from dualbench.port.check import paddle_spec
    words = ["dualbench", "parity", "--torch", args.spec, "--paddle", paddle_spec(conversion, spec),
             *parity_options(args)]
    return " ".join(shlex.quote(w) for w in words)


# the options passed on to `dualbench parity` as given (parity's defaults are port's: left out when unchanged)
PARITY_OPTIONS = ("input", "inputs", "loss", "classes", "steps", "optimizer", "lr", "mapping", "weights", "atol",
                  "rtol", "seed", "out")
PARITY_FLAGS = ("float64", "no_float64")
PARITY_DEFAULTS = {"weights": "torch", "seed": 0}


def parity_options(args):
    """The command line `dualbench parity` gets for the pair, less --torch and --paddle."""
    argv = []
    for name in PARITY_OPTIONS:
        value = getattr(args, name)
        if value is not None and value != PARITY_DEFAULTS.get(name):
            argv += ["--" + name.replace("_", "-"), str(value)]
    return argv + ["--" + name.replace("_", "-") for name in PARITY_FLAGS if getattr(args, name)]


def cmd_port(args):
    from dualbench.model_loader import model_factory
    from dualbench.parity.cli import pair_inputs
    from dualbench.port.check import check_pair
    from dualbench.port.convert import convert_file, require_paconvert, unconverted_error
    check_options(args)                 # the user's input first, then what must be installed; nothing written yet
    spec = torch_spec(args)
    pair_inputs(args)                   # reads --inputs: a bad file is refused here
    version = require_paconvert()
    _, spec = model_factory(args.spec, "torch", seed=args.seed, option="dualbench port")   # imports the torch file
    conversion = convert_file(Path(spec.module).expanduser(), args.out, version)
    if conversion.unconverted:
        raise unconverted_error(conversion, parity_command(args, conversion, spec))
    check_pair(conversion, spec, parity_options(args))
