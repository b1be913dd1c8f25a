"""What a bench cell trains on, inside the worker: a built-in task's data (random uint8 pixels or a named
dataset, prepared as the task does) or a model pair's seeded inputs, and the endless seeded batch order.
One dataset is cached per worker at a time."""
import hashlib

import numpy as np

from dualbench.common.data.sources import load_dataset
from dualbench.common.data.split import epoch_batches, normalize, prepare_splits
from dualbench.common.tasks import get_task
from dualbench.timings.table import PAIR_DISTINCT_BATCHES, pair_dataset


class BatchOrder:
    """Lazy, endless-enough sequence of index batches: epoch after epoch of the common seeded order."""

    def __init__(self, n, batch_size, seed, length):
        self.n, self.batch_size, self.seed, self.length = n, batch_size, seed, length
        self.per_epoch = n // batch_size
        self._epoch, self._batches = None, None

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        if not 0 <= i < self.length:
            raise IndexError(i)
        epoch = i // self.per_epoch + 1
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, epoch_batches(self.n, self.batch_size, self.seed, epoch, True)
        return self._batches[i % self.per_epoch]


def cached(cache, key, make):
    """The cache holds one dataset at a time: a new key drops the previous arrays before `make` builds
    the new ones, so a worker that benchmarks many tasks never holds more than one copy of a dataset and
    each cell's peak RSS is its own task's, not an accumulation of the tasks before it."""
    if key not in cache:
        cache.clear()
        cache[key] = make()
    return cache[key]


def random_data(task, n, seed, cache):
    """Uniform random uint8 pixels of the task's input shape, normalised as the task does, random labels.

    Speed does not depend on pixel values; the arrays are large enough (n samples) that batches are
    gathered from main memory as with a real dataset. Only the normalised float32 copy is kept.
    """
    def make():
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, size=(n, *task.model.input_shape), dtype=np.uint8)
        labels = rng.integers(0, task.num_classes, size=n).astype(np.int64)
        digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
        return normalize(images, *task.data.normalize), labels, digest

    key = ("random", tuple(task.model.input_shape), task.num_classes, n, seed, tuple(task.data.normalize))
    x, labels, digest = cached(cache, key, make)
    return x, labels, {"dataset": f"random-uint8-n{n}", "dataset_sha256": digest, "synthetic": True}


def dataset_splits(task, name, cache):
    """A named dataset (real or synthetic), prepared for the task (its normalisation, classes, split)."""
    def make():
        dataset = load_dataset(name)
        meta = {"dataset": dataset.name, "dataset_sha256": dataset.sha256, "synthetic": dataset.synthetic}
        return prepare_splits(dataset, task), meta

    return cached(cache, ("dataset", name, task.name), make)


def bench_data(task, cell, cache):
    if cell.get("dataset") in (None, "", "random"):
        return random_data(task, int(cell["samples"]), int(cell["seed"]), cache)
    splits, meta = dataset_splits(task, cell["dataset"], cache)
    return splits.train_x, splits.train_y, meta


def pair_workload(cell, backend_name, cache):
    """A model pair's side for this backend: (task, build_model, x, y, data meta). The model comes from the
    SPEC (dualbench.model_loader), the task is the plain protocol the pair parity uses (one loss, one
    optimizer); inputs are seeded standard-normal arrays, labels random classes, the same for both backends."""
    from dualbench.model_loader import model_factory
    from dualbench.parity.pair import pair_task
    pair, batch_size, seed = cell["pair"], int(cell["batch_size"]), int(cell["seed"])
    factory, _ = model_factory(pair[backend_name], backend_name, seed)
    task = pair_task(cell["task"], "ce", pair["optimizer"], float(pair["lr"]), batch_size)

    def make():
        n = PAIR_DISTINCT_BATCHES * batch_size
        rng = np.random.default_rng([seed, 1234])
        x = rng.standard_normal((n, *pair["input"])).astype(np.float32)
        y = rng.integers(0, int(pair["classes"]), n).astype(np.int64)
        digest = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
        return x, y, {"dataset": pair_dataset(batch_size), "dataset_sha256": digest, "synthetic": True}

    x, y, meta = cached(cache, ("pair", tuple(pair["input"]), int(pair["classes"]), batch_size, seed), make)
    return task, lambda: factory(), x, y, meta


def workload(cell, backend, cache):
    """(task, build_model, x, y, data meta) of a cell: a built-in task with its data, or a model pair."""
    if cell.get("pair"):
        return pair_workload(cell, backend.NAME, cache)
    task = get_task(cell["task"])
    x, y, meta = bench_data(task, cell, cache)
    return task, lambda: backend.models.build_model(task.model), x, y, meta
