"""Small synthetic datasets written in the real on-disk format, with learnable class structure.

Each class has a fixed random template (smooth blobs); a sample is its template, shifted by up to
two pixels, with noise. Models learn it in an epoch or two, so tests can check that loss falls.
Numbers measured on synthetic data are never accuracy claims: results mark them `synthetic`.

Every format has a writer here (IDX, mnist.json.gz, CIFAR pickle batches, a Food-11 folder of
JPEGs), so any task runs anywhere through the very readers the real data goes through.
"""
from pathlib import Path

import numpy as np
from PIL import Image

from dualbench.common.data.idx import write_idx
from dualbench.common.data.catalog import IDX_FILES, cache_dir, get_info
from dualbench.common.data.files import data_files, dataset_sha256
from dualbench.common.fsutil import atomic_path

SYNTH_SEED = 1234
SYNTHETIC_MARKER = "DUALBENCH_SYNTHETIC"   # marks a folder of generated files, whatever name reads it
DEFAULT_SIZES = {   # (train, test) per format; Food-11 also writes a validation split of `test` images
    "idx": (2000, 500), "mnist-json": (2000, 500), "cifar-python": (2000, 500), "food-folder": (220, 110),
}
FOOD_STORED_SIZE = (144, 160)   # not 128 x 128, so the reader's resize is exercised like on real photos


def class_templates(num_classes, shape, seed=SYNTH_SEED):
    """num_classes smooth float templates in [0, 1], shape (C, H, W)."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    templates = np.zeros((num_classes, c, h, w), np.float32)
    for k in range(num_classes):
        for ch in range(c):
            for _ in range(3):
                cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
                sigma = rng.uniform(0.08, 0.18) * min(h, w)
                templates[k, ch] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2))
    return np.clip(templates / templates.max(axis=(1, 2, 3), keepdims=True), 0, 1)


def synthetic_arrays(n, num_classes, shape, seed, noise=0.25):
    """(images uint8 N x C x H x W, labels int64 N) with balanced classes."""
    rng = np.random.default_rng(seed)
    templates = class_templates(num_classes, shape)
    labels = (np.arange(n) % num_classes).astype(np.int64)
    rng.shuffle(labels)
    images = templates[labels]
    shifts = rng.integers(-2, 3, size=(n, 2))
    for i, (dy, dx) in enumerate(shifts):   # writing files once; not a training hot path
        images[i] = np.roll(images[i], (dy, dx), axis=(1, 2))
    images = images + rng.normal(0, noise, images.shape).astype(np.float32)
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8), labels


def write_synthetic(name, out_dir, n_train=None, n_test=None, seed=SYNTH_SEED):
    """Write a small synthetic dataset in the on-disk format of `name` into out_dir; returns the
    folder (or file) the dataset's reader takes. `name` may be real ('cifar10'): only its format,
    shape and class count are used."""
    info = get_info(name)
    default_train, default_test = DEFAULT_SIZES[info.format]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / SYNTHETIC_MARKER).write_text("written by dualbench's synthetic generator: not real data\n")
    n_train = default_train if n_train is None else n_train
    n_test = default_test if n_test is None else n_test
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    k, shape = info.num_classes, info.shape
    if info.format == "food-folder":
        shape = (shape[0], *FOOD_STORED_SIZE)
    train_x, train_y = synthetic_arrays(n_train, k, shape, seed)
    test_x, test_y = synthetic_arrays(n_test, k, shape, seed + 1)
    if info.format == "idx":
        for role, array in (("train_images", train_x[:, 0]), ("train_labels", train_y),
                            ("test_images", test_x[:, 0]), ("test_labels", test_y)):
            write_idx(out_dir / IDX_FILES[role], array)
        return out_dir
    if info.format == "mnist-json":
        from dualbench.common.data.jsongz import write_mnist_json
        val_x, val_y = synthetic_arrays(n_test, k, shape, seed + 2)
        path = out_dir / info.files["json"]
        write_mnist_json(path, {"train": (train_x, train_y), "val": (val_x, val_y), "eval": (test_x, test_y)})
        return path
    if info.format == "cifar-python":
        from dualbench.common.data.cifar import write_cifar_dir
        batches = out_dir / (info.subdir or "cifar-10-batches-py")
        batches.mkdir(exist_ok=True)
        write_cifar_dir(batches, train_x, train_y, test_x, test_y)
        return batches
    if info.format == "food-folder":
        val_x, val_y = synthetic_arrays(n_test, k, shape, seed + 2)
        for folder, x, y in ((info.files["train"], train_x, train_y), (info.files["val"], val_x, val_y),
                             (info.files["test"], test_x, test_y)):
            write_jpegs(out_dir / folder, x, y)
        return out_dir
    raise ValueError(f"no synthetic writer for format {info.format!r}")


def write_jpegs(directory, images, labels, quality=92):
    """Save uint8 N x 3 x H x W as <label>_<n>.jpg (n counts per label, as in Food-11)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    counts = {}
    for image, label in zip(images, labels):
        n = counts[int(label)] = counts.get(int(label), -1) + 1
        with atomic_path(directory / f"{label}_{n}.jpg", suffix=".jpg.part") as tmp:
            Image.fromarray(image.transpose(1, 2, 0)).save(tmp, format="JPEG", quality=quality)


def install_synthetic(name):
    """Generate a synthetic dataset into the cache as one folder swap (safe when two worker
    processes race to create it: the first one wins, the other's copy is dropped)."""
    from dualbench.common.data.store import manifest_files, staged_dir, write_manifest
    info = get_info(name)
    dest = cache_dir() / name
    with staged_dir(dest, replace=False) as tmp:
        where = write_synthetic(name, tmp)
        files = manifest_files(tmp, data_files(info, where))
        write_manifest(tmp, name, "generated (synthetic)", files, {"sha256": dataset_sha256(info, where)})
    return dest
