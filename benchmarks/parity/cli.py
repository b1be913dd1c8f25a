"""`dualbench parity` (built-in tasks, or any torch/paddle model pair) and `dualbench convert`."""
from pathlib import Path

import numpy as np

from dualbench.common.errors import UserError
from dualbench.common.tasks import select_tasks
from dualbench.parity.pair import DEFAULT_PAIR_STEPS, DEFAULT_STEPS, ParityConfig

PAIR_ONLY = ("input", "inputs", "loss", "classes", "lr", "mapping", "weights")


def register(subparsers):
    p = subparsers.add_parser("parity", help="compare torch and paddle layer by layer, gradient by gradient "
                              "and step by step, for the built-in tasks or your own model pair; name the "
                              "convention behind any difference")
    p.add_argument("--task", help="task name or comma list (see `dualbench tasks`)")
    p.add_argument("--all", action="store_true", help="every task")
    p.add_argument("--torch", metavar="SPEC", help="your torch model: module:callable or file.py:callable, "
                   "optionally :{JSON keyword arguments}, e.g. torchvision.models:resnet18")
    p.add_argument("--paddle", metavar="SPEC", help="your paddle model, e.g. paddle.vision.models:resnet18")
    p.add_argument("--input", metavar="SHAPE", help="model pairs: random input of this shape, e.g. 2,3,224,224")
    p.add_argument("--inputs", type=Path, metavar="FILE.npz",
                   help="model pairs: inputs from a .npz: arrays whose keys name forward() parameters are passed by "
                        "name (token ids keep their integer dtype; the mapping file's \"inputs\" renames a key per "
                        "side), others in order; one named y or labels is the labels")
    p.add_argument("--output", type=int, default=0, metavar="N",
                   help="model pairs whose forward() returns a tuple or dict: the loss is on its N-th tensor "
                        "(default 0, the first; the rows name them output[0], output[1][0] ...)")
    p.add_argument("--loss", choices=["ce", "ce_last", "mse", "sum"],
                   help="model pairs: loss for gradients and steps (default: ce for [N, C] outputs, ce_last -- classes "
                        "on the last axis, [N, T] labels -- for [N, T, V] outputs, else mse)")
    p.add_argument("--classes", type=int, help="model pairs, --loss ce: random labels in [0, N) (default: C)")
    p.add_argument("--steps", "--train-steps", dest="steps", type=int,
                   help=f"optimizer steps to compare (tasks: default {DEFAULT_STEPS}, fewer for models too big "
                        f"for the time budget; model pairs: {DEFAULT_PAIR_STEPS})")
    p.add_argument("--optimizer", choices=["sgd", "momentum", "adam"],
                   help="tasks: override the task's optimizer; model pairs: default sgd")
    p.add_argument("--lr", type=float, help="model pairs: learning rate (default 0.01, adam 0.001)")
    p.add_argument("--mapping", type=Path, metavar="FILE",
                   help="model pairs: module/tensor mapping to use instead of matching (edit OUT/mapping.json)")
    p.add_argument("--weights", choices=["torch", "paddle", "random"], default="torch",
                   help="model pairs: start both from torch's weights (default), paddle's, or the same random "
                        "canonical weights (when the models' own weights give near-zero outputs)")
    p.add_argument("--atol", type=float, help="absolute tolerance for every float32 check (default: per check)")
    p.add_argument("--rtol", type=float, help="relative tolerance for every float32 check (default: per check)")
    p.add_argument("--batch-size", type=int, help="tasks: batch size (default: the task's, at most 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-float64", action="store_true", help="skip the float64 repeat of the training steps")
    p.add_argument("--float64", action="store_true",
                   help="model pairs: always repeat in float64 (default: only when a float32 check fails)")
    p.add_argument("--dataset", help="tasks: use real batches from this dataset instead of seeded random inputs")
    p.add_argument("--data-path", type=Path, help="folder (or file) holding the dataset's files")
    p.add_argument("--out", type=Path, default=Path("runs/parity"), help="output folder (default runs/parity)")
    p.set_defaults(func=cmd_parity)

    from dualbench.parity.convert import register as register_convert
    register_convert(subparsers)


def check_common(args):
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be at least 1, got {args.steps}")
    for flag in ("atol", "rtol"):
        value = getattr(args, flag)
        if value is not None and not (value >= 0 and np.isfinite(value)):
            raise UserError(f"--{flag} must be a finite number >= 0, got {value}")


def cmd_parity(args):
    check_common(args)
    if args.torch or args.paddle:
        return cmd_pair(args)
    given = [f"--{flag}" for flag in PAIR_ONLY if getattr(args, flag) not in (None, "torch")]
    if given:
        raise UserError(f"{', '.join(given)} apply to model pairs: give --torch SPEC and --paddle SPEC")
    if args.all and args.task:
        raise UserError("give either --task or --all, not both")
    if not args.all and not args.task:
        raise UserError("--task is required (a name from `dualbench tasks`, a comma list), or --all, "
                        "or --torch SPEC --paddle SPEC for your own model pair")
    if args.batch_size is not None and args.batch_size < 2:
        raise UserError(f"--batch-size must be at least 2, got {args.batch_size}")
    tasks = select_tasks("all" if args.all else args.task)
    if not tasks:
        raise UserError("no task selected")
    from dualbench import backends
    backends.require("torch")
    backends.require("paddle")
    if args.dataset:
        from dualbench.common.data.catalog import get_info
        info = get_info(args.dataset)
        for task in tasks:
            if tuple(info.shape) != tuple(task.model.input_shape):
                raise UserError(f"dataset '{args.dataset}' has images {info.shape}, task '{task.name}' "
                                f"expects {tuple(task.model.input_shape)}")
    config = ParityConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed, optimizer=args.optimizer,
                          atol=args.atol, rtol=args.rtol, float64=not args.no_float64, dataset=args.dataset,
                          data_path=args.data_path)
    from dualbench.parity.run import run_parity
    _, summary = run_parity(tasks, config, args.out)
    if (summary.result != "pass").any():
        raise SystemExit(1)


def pair_inputs(args):
    """(inputs, labels): --input SHAPE (seeded standard-normal floats) or --inputs FILE.npz ({key: array},
    bound to each model's forward() parameters when the keys name them; labels from y/labels)."""
    from dualbench.model_loader import parse_shape
    from dualbench.parity.inputs import random_inputs, read_npz
    if bool(args.input) == bool(args.inputs):
        raise UserError("a model pair needs its input: --input SHAPE (random, e.g. 2,3,224,224) or --inputs FILE.npz")
    if args.inputs:
        return read_npz(args.inputs)
    shape = parse_shape(args.input)
    if len(shape) < 2 or shape[0] < 2:
        raise UserError(f"--input {args.input}: needs a batch of at least 2 (BatchNorm in train mode), e.g. 2,3,224,224")
    return random_inputs(shape, 1, args.seed)[0], None


def check_pair_options(args):
    """A model pair's numeric options, one line per problem (shared with `dualbench port`)."""
    if args.classes is not None and args.classes < 1:
        raise UserError(f"--classes must be at least 1, got {args.classes}")
    if args.lr is not None and not (args.lr > 0 and np.isfinite(args.lr)):
        raise UserError(f"--lr must be a positive number, got {args.lr}")
    if args.no_float64 and args.float64:
        raise UserError("give either --float64 or --no-float64")


def cmd_pair(args):
    if args.task or args.all:
        raise UserError("give either --task/--all or --torch/--paddle, not both")
    check_pair_options(args)
    inputs, labels = pair_inputs(args)
    from dualbench.parity.pair import load_pair_factories
    factories, label, sides = load_pair_factories(args)
    config = ParityConfig(steps=args.steps or DEFAULT_PAIR_STEPS, seed=args.seed, optimizer=args.optimizer or "sgd",
                          lr=args.lr, atol=args.atol, rtol=args.rtol,
                          float64=False if args.no_float64 else (True if args.float64 else "auto"),
                          weights=args.weights, output_leaf=args.output)
    from dualbench.parity.pair import model_pair
    from dualbench.parity.run import run_model_pair
    info = {"torch": args.torch, "paddle": args.paddle,
            "input": ({k: list(np.shape(v)) for k, v in inputs.items()} if isinstance(inputs, dict)
                      else list(np.shape(inputs)))}
    pair = model_pair(factories, sides, config, inputs, loss=args.loss, classes=args.classes, labels=labels,
                      mapping_file=args.mapping, name=label, info=info)
    _, summary = run_model_pair(pair, sides, config, args.out)
    if (summary.result != "pass").any():
        raise SystemExit(1)
