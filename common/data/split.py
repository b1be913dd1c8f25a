"""Splits, class filtering, normalisation and the seeded batch order that every backend consumes.

Both backends receive the same float32 arrays and the same list of index batches per epoch, so
they train on exactly the same samples in exactly the same order.
"""
import hashlib
from dataclasses import dataclass
from typing import Optional

import numpy as np

from dualbench.common.errors import DataError, UserError

SPLIT_SEED = 0   # the train/val split is fixed across runs; the run seed drives init and order


@dataclass
class Splits:
    """Normalised float32 arrays N x C x H x W and int64 labels, ready for a backend."""
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: Optional[np.ndarray]
    val_y: Optional[np.ndarray]
    test_x: np.ndarray
    test_y: np.ndarray


def normalize(images, mean, std):
    """uint8 N x C x H x W -> float32 ((x / 255) - mean) / std, computed once per split."""
    out = images.astype(np.float32)
    out *= np.float32(1.0 / (255.0 * std))
    out -= np.float32(mean / std)
    return out


def filter_classes(x, y, classes, where="dataset"):
    """Keep only `classes` (original labels) and relabel them 0..k-1 in the given order."""
    if classes is None:
        return x, y
    lookup = np.full(max(int(y.max(initial=0)), max(classes)) + 1, -1, np.int64)
    lookup[list(classes)] = np.arange(len(classes))
    keep = lookup[y] >= 0
    if not keep.any():
        raise DataError(where, f"no samples of classes {list(classes)}")
    return x[keep], lookup[y[keep]]


def train_val_split(n, val_fraction, seed=SPLIT_SEED):
    """(train_idx, val_idx): a seeded permutation, e.g. 50,000 / 10,000 of 60,000 at 1/6."""
    n_val = int(round(n * val_fraction))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def check_labels(y, num_classes, where):
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(where, f"labels must be in 0..{num_classes - 1}, found {y.min()}..{y.max()}")


def prepare_splits(dataset, task, limit_train=None):
    """Task-specific splits of a loaded Dataset: class filter, val split, limit, normalisation."""
    shape = tuple(dataset.train_x.shape[1:])
    if shape != tuple(task.model.input_shape):
        raise UserError(f"dataset '{dataset.name}' has images {shape}, task '{task.name}' "
                        f"expects {tuple(task.model.input_shape)}")
    classes = task.data.classes
    train_x, train_y = filter_classes(dataset.train_x, dataset.train_y, classes, dataset.source)
    test_x, test_y = filter_classes(dataset.test_x, dataset.test_y, classes, dataset.source)
    val_x = val_y = None
    if dataset.val_x is not None:
        # the format ships its own validation split (mnist.json.gz, Food-11's validation/): always
        # use it, never carve one out of train (food11-cnn early-stops on it with val_fraction 0)
        val_x, val_y = filter_classes(dataset.val_x, dataset.val_y, classes, dataset.source)
    elif task.protocol.val_fraction > 0:
        tr, va = train_val_split(len(train_y), task.protocol.val_fraction)
        train_x, train_y, val_x, val_y = train_x[tr], train_y[tr], train_x[va], train_y[va]
    if limit_train is not None:
        if limit_train < 1:
            raise UserError(f"--limit-train must be at least 1, got {limit_train}")
        train_x, train_y = train_x[:limit_train], train_y[:limit_train]
    for y in (train_y, val_y, test_y):
        if y is not None:
            check_labels(y, task.num_classes, dataset.source)
    mean, std = task.data.normalize
    norm = (lambda a: None if a is None else normalize(a, mean, std))
    return Splits(norm(train_x), train_y, norm(val_x), val_y, norm(test_x), test_y)


def epoch_batches(n, batch_size, seed, epoch, drop_last=False):
    """The shuffled index batches of one training epoch, the same for every backend."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    stop = (n // batch_size) * batch_size if drop_last else n
    return [perm[i:i + batch_size] for i in range(0, stop, batch_size)]


def eval_batches(n, batch_size):
    """Evaluation order: the dataset in order, the last batch possibly short."""
    return [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def order_hash(batches):
    """A short hash of a batch order (recorded in every result row)."""
    h = hashlib.sha256()
    for b in batches:
        h.update(np.asarray(b, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]
