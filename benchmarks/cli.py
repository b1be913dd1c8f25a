"""`dualbench`: the command line. User errors print one line and exit 2, never a traceback."""
import argparse
import importlib
import os
import signal
import sys
from pathlib import Path

from dualbench.common.errors import UserError
from dualbench.executor import add_arguments as add_executor_arguments

# Modules with a register(subparsers) function, one subcommand each.
COMMAND_MODULES = ["dualbench.data_cmd", "dualbench.parity", "dualbench.bench", "dualbench.report",
                   "dualbench.study", "dualbench.port"]


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def cmd_tasks(args):
    import pandas as pd

    from dualbench import backends
    from dualbench.common.tasks import count_parameters, select_tasks

    tasks = select_tasks(args.task)
    counts = {}
    for name in backends.BACKENDS:
        if args.no_backends or not backends.is_installed(name):
            continue
        module = backends.load(name)
        counts[name] = {t.name: module.models.count_parameters(module.models.build_model(t.model)) for t in tasks}
    rows = []
    for t in tasks:
        p = t.protocol
        opt = p.optimizer
        row = {"task": t.name, "dataset": t.data.dataset, "model": t.model.name,
               "params (spec)": count_parameters(t.model)}
        for name in backends.BACKENDS:
            row[f"params {name}"] = counts.get(name, {}).get(t.name, "n/a")
        extras = [f"wd {opt.weight_decay:g}" if opt.weight_decay else "", f"l1 {p.l1:g}" if p.l1 else "",
                  f"l2 {p.l2:g}" if p.l2 else "", f"clip {p.grad_clip:g}" if p.grad_clip else "",
                  p.schedule.name if p.schedule.name != "none" else "",
                  f"early-stop {p.early_stop_patience}" if p.early_stop_patience else ""]
        row.update({"loss": t.loss, "optimizer": opt.name + (f" {opt.momentum:g}" if opt.momentum else ""),
                    "lr": f"{opt.lr:g}", "batch": p.batch_size, "epochs": p.epochs,
                    "extras": ", ".join(e for e in extras if e) or "-"})
        rows.append(row)
    frame = pd.DataFrame(rows)
    print(frame.to_string(index=False))
    if args.verbose:
        for t in tasks:
            print(f"\n{t.name} (seed note {t.seed_note}): {t.title}\n  {t.notes}" if t.notes else
                  f"\n{t.name} (seed note {t.seed_note}): {t.title}")


def cmd_run(args):
    from dualbench import backends
    from dualbench.executor import from_args, session
    from dualbench.run import parse_seeds, run
    from dualbench.common.tasks import select_tasks, with_overrides

    executor = from_args(args)   # first: asking for Ray without it installed is a one-line error
    if not args.task:
        raise UserError("--task is required (a name from `dualbench tasks`, a comma list, or 'all')")
    tasks = [with_overrides(t, args.lr, args.batch_size) for t in select_tasks(args.task)]   # validates
    names = backends.parse_backends(args.backend)
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {args.epochs}")
    if args.dataset:
        from dualbench.common.data.catalog import get_info
        get_info(args.dataset)
    seeds = parse_seeds(args.seeds)
    with session(executor):
        run(tasks, names, seeds, args.out, epochs=args.epochs, dataset=args.dataset,
            data_path=args.data_path, limit_train=args.limit_train, init=args.init, device=args.device,
            threads=args.threads, progress=not args.no_progress, lr=args.lr, batch_size=args.batch_size,
            augment=args.augment, deterministic=args.deterministic, executor=executor)


def cmd_predict(args):
    from dualbench.predict import predict_image
    predict_image(args.task, args.checkpoint, args.image, backend_name=args.backend, invert=args.invert,
                  device=args.device)


def build_parser():
    parser = OneLineParser(prog="dualbench", description="Run the same deep-learning tasks natively in "
                           "PyTorch and PaddlePaddle: numerical parity, accuracy and paired speed.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)

    p = sub.add_parser("tasks", help="list the tasks: data, model, parameter counts per backend, protocol")
    p.add_argument("--task", default="all", help="comma-separated task names (default: all)")
    p.add_argument("--no-backends", action="store_true", help="do not import the frameworks to count parameters")
    p.add_argument("-v", "--verbose", action="store_true", help="also print each task's notes")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("run", help="train and evaluate tasks in each backend, append rows to OUT/runs.csv")
    p.add_argument("--task", help="task name, comma list, or 'all'")
    p.add_argument("--backend", "--backends", default="torch,paddle", help="torch, paddle or torch,paddle")
    p.add_argument("--epochs", type=int, help="override the task's number of epochs")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--device", choices=["cpu", "gpu", "auto"], default="cpu")
    p.add_argument("--dataset", help="dataset name (default: the task's; see `dualbench data list`)")
    p.add_argument("--data-path", type=Path, help="folder (or file) holding the dataset's files")
    p.add_argument("--limit-train", type=int, help="use only the first N training samples")
    p.add_argument("--lr", type=float, help="override the task's learning rate")
    p.add_argument("--batch-size", type=int, help="override the task's batch size")
    p.add_argument("--augment", choices=["none", "hflip"],
                   help="training augmentation, done in numpy in common so both backends get identical batches")
    p.add_argument("--init", choices=["own", "shared"], default="own",
                   help="own: each framework's initialisation (default); shared: identical numpy weights")
    p.add_argument("--threads", type=int, help=f"math threads per framework (default: all {os.cpu_count()} cores)")
    p.add_argument("--out", type=Path, default=Path("runs"), help="output folder (default: runs/)")
    p.add_argument("--deterministic", action="store_true",
                   help="GPU: deterministic algorithms / cuDNN (slower); CPU runs are deterministic anyway")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_executor_arguments(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("predict", help="classify one image with a trained checkpoint (.pt or .pdparams)")
    p.add_argument("--task", required=True)
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--backend", help="default: from the checkpoint's suffix")
    p.add_argument("--invert", action="store_true",
                   help="invert the image first (dark digit on light paper); off by default: the task's "
                        "training preprocessing is applied unchanged")
    p.add_argument("--device", choices=["cpu", "gpu", "auto"], default="cpu")
    p.add_argument("image", type=Path)
    p.set_defaults(func=cmd_predict)

    # Each engine module adds its own subcommand with register(sub); they import no framework at
    # module level, so `dualbench --help` stays fast and works with one framework missing.
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


class Terminated(Exception):
    """SIGTERM, turned into an exception so that cleanup (stopping the worker) runs."""


def _raise_terminated(signum, frame):
    raise Terminated()


def main(argv=None):
    signal.signal(signal.SIGTERM, _raise_terminated)
    from dualbench.backends import quiet_framework_imports
    quiet_framework_imports()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        args.func(args)
    except UserError as e:
        print(f"dualbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dualbench: interrupted; finished cells are saved, rerun the same command to resume", file=sys.stderr)
        return 130
    except Terminated:
        print("dualbench: terminated; finished cells are saved, rerun the same command to resume", file=sys.stderr)
        return 143
    return 0


if __name__ == "__main__":
    sys.exit(main())
