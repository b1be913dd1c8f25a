"""The benchmark suites: which tasks, batch sizes, modes and timing settings a `dualbench bench` runs."""
import os
import sys
from dataclasses import dataclass, replace
from typing import Optional, Tuple

import numpy as np

from dualbench.common.errors import UserError

MNIST_LIKE, CIFAR_LIKE = (1, 28, 28), (3, 32, 32)
# Training-set sizes of the real datasets, for time per epoch (random data stands in for them).
REFERENCE_TRAIN_SIZES = {"mnist": 60000, "fashion-mnist": 60000, "mnist5k": 4000, "cifar10": 50000,
                         "food11": 9866}
DATASET_CLASSES = {"cifar10": 10, "mnist": 10, "fashion-mnist": 10, "mnist5k": 10, "food11": 11}


@dataclass(frozen=True)
class ModelPair:
    """A user's model pair for `dualbench bench --torch SPEC --paddle SPEC`: benchmarked like a task, on
    seeded random inputs of `input` shape and random labels among `classes`."""
    name: str
    torch: str
    paddle: str
    input: Tuple[int, ...]
    classes: int
    batch_size: int
    optimizer: str = "sgd"
    lr: float = 0.01

    def cell_fields(self):
        return {"torch": self.torch, "paddle": self.paddle, "input": list(self.input), "classes": self.classes,
                "optimizer": self.optimizer, "lr": self.lr}


@dataclass(frozen=True)
class Suite:
    name: str
    device: str = "cpu"
    shapes: Tuple[Tuple[int, int, int], ...] = (MNIST_LIKE, CIFAR_LIKE)   # tasks chosen by input shape
    conv_only: bool = False       # only tasks with conv layers (the GPU suite: small MLPs measure launch latency)
    batch_sizes: Tuple[Optional[int], ...] = (None,)                   # None: the task's batch size
    modes: Tuple[str, ...] = ("eager",)
    precisions: Tuple[str, ...] = ("fp32",)
    repeats: int = 6
    warmup: int = 3
    warmup_seconds: float = 0.25     # > paddle's OpenMP spin time (KMP_BLOCKTIME 200 ms) of the idle worker
    steps: str = "auto"
    windows: int = 6
    window_seconds: float = 0.06     # short windows, more pairs: the spread is between processes, not windows
    bare: bool = True
    ttt: bool = True
    tasks: Tuple[str, ...] = ()      # the suite's own task list; empty: every task of `shapes`
    # Time to target on named datasets at given targets ((dataset, target), ...); empty: each task's own
    # dataset (or a synthetic stand-in) at the task's target.
    ttt_targets: Tuple[Tuple[str, float], ...] = ()
    ttt_max_epochs: int = 0          # epoch budget of a time-to-target cell; 0: the task's epochs
    workloads: Tuple[str, ...] = ("train",)          # train and/or infer (--mode)
    infer_batch_sizes: Tuple[Optional[int], ...] = (1, None)   # None: the task's training batch size
    infer_repeats: int = 0           # interleaved pairs of inference cells; 0: `repeats`
    # Tuning (stage "tune"): each backend tries every candidate setting (timings.settings) on its own,
    # one cell of tune_windows windows each; the winner runs the "best" stage's paired repeats.
    tune: bool = False
    tune_windows: int = 6
    tune_modes: Tuple[str, ...] = ("eager",)         # --tune-compile adds "compiled"
    tune_cores: int = os.cpu_count() or 1
    # Second stage (two-stage design, common.stats.pairs_needed): after `repeats` pairs, configurations
    # whose ratio CI is wider than +-ci_target get the pairs still missing, up to max_repeats, engine loop
    # only, while the whole invocation stays within budget_seconds. ci_target 0 turns it off. The tuning
    # and best stages start no repeat group expected to end past budget_seconds either.
    ci_target: float = 0.03
    max_repeats: int = 40
    budget_seconds: float = 585.0    # timing stops in time for the whole command to end within 10 minutes
    # A/A pairs (stage "aa"): in the equal stage each framework is also timed against itself, two worker
    # processes of the same framework and setting interleaved like a torch/paddle pair, on the suite's
    # smallest and largest task (planning.aa_tasks): the machine's noise floor for the run.
    aa: bool = True


# The default suite's tasks: one of each kind of model (linear, MLPs with sigmoid/ReLU/dropout, conv, LeNet,
# CIFAR nets with and without BatchNorm); the other MNIST-MLP variants differ only in loss or optimizer
# and ran at the same speed as mnist-mlp (+-3%) in the committed equal-settings table.
DEFAULT_TASKS = ("mnist-linear-mse", "mnist-mlp-sigmoid-mse", "mnist-conv-ce", "mnist-mlp", "mnist-mlp-dropout",
                 "mnist-lenet", "cifar2-net", "cifar2-netbatchnorm")

SUITES = {
    # Eight CPU tasks, both backends: equal settings, then each framework tuned and at its best, training
    # and inference; the bare loop alongside. Sized to end within 10 minutes on 2 cores: with 6 pairs per
    # stage and 4 for inference the three stages alone took 9.2-10.3 min here, so 5 and 3. The A/A pairs
    # add 40 engine cells to the equal stage; a best-stage repeat that would end past 580 s waits for a rerun
    # (the summary and the report take about 5 s more).
    "default": Suite("default", tasks=DEFAULT_TASKS, workloads=("train", "infer"), tune=True, ttt=False,
                     repeats=5, infer_repeats=3, budget_seconds=580.0),
    # Time to target on real data, each framework at its best: LeNet on Fashion-MNIST and the MNIST 5k
    # subset (targets both frameworks reach). The tuning stage runs first, on LeNet's training step.
    # A user's model pair (--torch/--paddle): training and inference on random data, tuned; a train step
    # of a 224x224 model takes about a second here, so one step per window and fewer repeats.
    "pairs": Suite("pairs", workloads=("train", "infer"), tune=True, ttt=False, bare=False, repeats=5, warmup=2,
                   windows=6, ci_target=0.0, budget_seconds=3600.0),
    "ttt": Suite("ttt", tasks=("mnist-lenet",), tune=True, ttt=True, repeats=3, ci_target=0.0, bare=False,
                 ttt_targets=(("fashion-mnist", 0.85), ("mnist5k", 0.95)), ttt_max_epochs=15, budget_seconds=1800.0),
    # GPU: larger batches, eager vs compiled, fp32 vs AMP, on the conv tasks.
    # GPU, tuned over eager/compiled, fp32/AMP, cuDNN autotuning and TF32 (not run here: no GPU was lent).
    "gpu": Suite("gpu", device="gpu", conv_only=True, shapes=(MNIST_LIKE, CIFAR_LIKE, (3, 128, 128)),
                 batch_sizes=(None, 512), modes=("eager", "compiled"), precisions=("fp32", "amp"),
                 repeats=5, warmup=10, warmup_seconds=1.0, window_seconds=0.2, budget_seconds=1800.0,
                 workloads=("train", "infer"), tune=True, tune_modes=("eager", "compiled")),
}


def suite_tasks(suite, names=None):
    """Tasks of the suite: by input shape from the registry (new tasks join automatically), or the
    --tasks list; unknown names are skipped with a note."""
    from dualbench.common.tasks import TASKS
    if names or suite.tasks:
        wanted = [n.strip() for n in names.split(",") if n.strip()] if names else list(suite.tasks)
        unknown = [n for n in wanted if n not in TASKS]
        if unknown:
            print(f"dualbench bench: skipping unknown task(s): {', '.join(unknown)}", file=sys.stderr)
        tasks = [TASKS[n] for n in wanted if n in TASKS]
    elif suite.name in SUITES:
        tasks = [t for t in TASKS.values() if tuple(t.model.input_shape) in suite.shapes
                 and (not suite.conv_only or any(layer.kind == "conv" for layer in t.model.layers))]
    else:   # a family name, e.g. --suite cifar2 or --suite mnist-mlp
        tasks = [t for t in TASKS.values() if t.name.startswith(suite.name)]
    if not tasks:
        raise UserError(f"no tasks to benchmark (suite '{suite.name}', --tasks {names!r})")
    return tasks


def epoch_samples(task):
    """Training samples per epoch with the task's real dataset, or None when its size is unknown."""
    size = REFERENCE_TRAIN_SIZES.get(task.data.dataset)
    if size is None:
        return None
    if task.data.classes is not None:
        size = size * len(task.data.classes) // DATASET_CLASSES.get(task.data.dataset, 10)
    return int(round(size * (1 - task.protocol.val_fraction)))


def ttt_dataset(task):
    """The dataset for time to target: the task's own if on this machine, else a synthetic one of its shape."""
    from dualbench.common.data.catalog import DATASETS
    from dualbench.common.data.sources import locate
    try:
        if locate(task.data.dataset) is not None:
            return task.data.dataset
    except UserError:
        pass
    candidates = [f"synthetic-{task.data.dataset}"] + [n for n, info in DATASETS.items() if info.synthetic
                                                       and tuple(info.shape) == tuple(task.model.input_shape)]
    for name in candidates:
        info = DATASETS.get(name)
        if info is not None and info.synthetic and tuple(info.shape) == tuple(task.model.input_shape):
            return name
    return None


RANDOM_DATA_BYTES = 2 ** 28   # random float32 data per task: 256 MiB at most (Food-11 images are 196 KB each)


def random_samples(task, batch_size, wanted):
    """Samples of random data for a task: `wanted`, capped by memory, but always >= 4 batches."""
    per_sample = 4 * int(np.prod(task.model.input_shape))
    return int(min(wanted, max(4 * batch_size, RANDOM_DATA_BYTES // per_sample)))



def parse_int_list(text, option):
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{option} must be comma-separated integers, got '{text}'") from None
    if not values or min(values) < 1:
        raise UserError(f"{option} must be positive integers, got '{text}'")
    return values


def suite_from_args(args, default="default"):
    """The named suite with the command-line overrides applied (each override is a column of the grid).
    A task-name prefix (--suite cifar2) is the default suite's settings without its task list."""
    name = default if default != "default" and args.suite == "default" else args.suite
    base = SUITES.get(name) or replace(SUITES["default"], name=name, tasks=())
    changes = {}
    mode = getattr(args, "mode", None)
    if mode:
        changes["workloads"] = {"train": ("train",), "infer": ("infer",), "both": ("train", "infer")}[mode]
    if getattr(args, "tune", False):
        changes["tune"] = True
    if getattr(args, "no_tune", False):
        changes["tune"] = False
    if getattr(args, "tune_compile", False):
        changes["tune_modes"] = ("eager", "compiled")
    if getattr(args, "ttt", False):
        changes["ttt"] = True
    if args.device:
        changes["device"] = args.device
    if args.batch_size:
        changes["batch_sizes"] = tuple(parse_int_list(args.batch_size, "--batch-size"))
        if name == "pairs":
            changes["batch_sizes"] = changes["batch_sizes"][:1]
    if args.compile:
        changes["modes"] = ("eager", "compiled")
    if args.amp:
        changes["precisions"] = ("fp32", "amp")
    for option in ("repeats", "warmup", "windows"):
        value = getattr(args, option)
        if value is not None:
            if value < (0 if option == "warmup" else 1):
                raise UserError(f"--{option} must be at least {0 if option == 'warmup' else 1}, got {value}")
            changes[option] = value
    if args.steps is not None:
        if args.steps != "auto":
            parse_int_list(args.steps, "--steps")
        changes["steps"] = args.steps
    for option in ("warmup_seconds", "window_seconds"):
        value = getattr(args, option)
        if value is not None:
            if value < 0:
                raise UserError(f"--{option.replace('_', '-')} must not be negative, got {value}")
            changes[option] = value
    if args.ci_target is not None:
        if not 0 <= args.ci_target < 100:
            raise UserError(f"--ci-target is a percentage in [0, 100), got {args.ci_target}")
        changes["ci_target"] = args.ci_target / 100
    if args.max_repeats is not None:
        if args.max_repeats < 1:
            raise UserError(f"--max-repeats must be at least 1, got {args.max_repeats}")
        changes["max_repeats"] = args.max_repeats
    if args.budget_minutes is not None:
        if args.budget_minutes < 0:
            raise UserError(f"--budget-minutes must not be negative, got {args.budget_minutes}")
        changes["budget_seconds"] = 60 * args.budget_minutes
    if args.bare:
        changes["bare"] = True
    if args.no_bare:
        changes["bare"] = False
    if args.no_ttt:
        changes["ttt"] = False
    if getattr(args, "no_aa", False):
        changes["aa"] = False
    suite = replace(base, **changes)
    if "amp" in suite.precisions and suite.device == "cpu":
        raise UserError("--amp is measured on GPU only (paddle's auto_cast has no effect on CPU, so a CPU "
                        "comparison would be float32 against bfloat16); use --device gpu")
    return suite


