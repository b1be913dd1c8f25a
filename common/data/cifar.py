"""CIFAR-10 python batches -> numpy, through the restricted unpickler (never plain pickle).

Each of data_batch_1..5 and test_batch is a pickled dict (python 2, protocol 2) with `data`
(uint8 N x 3072: 1024 red, 1024 green, 1024 blue values, row-major 32 x 32) and `labels` (N ints).
The official archive cifar-10-python.tar.gz holds them under cifar-10-batches-py/.
"""
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from dualbench.common import safepickle
from dualbench.common.data.catalog import CIFAR_TEST_BATCHES, CIFAR_TRAIN_BATCHES
from dualbench.common.errors import DataError
from dualbench.common.fsutil import atomic_write_bytes

ROW = 3 * 32 * 32


def _field(batch, key):
    # python-2 pickles read with latin1 give str keys; ones written with bytes keys give b"..."
    if key in batch:
        return batch[key]
    return batch.get(key.encode())


def parse_batch(batch, path, num_classes=10):
    """A loaded batch dict -> (uint8 N x 3 x 32 x 32, int64 N), with every field checked."""
    if not isinstance(batch, dict):
        raise DataError(path, f"expected a pickled dict with 'data' and 'labels', got {type(batch).__name__}")
    data, labels = _field(batch, "data"), _field(batch, "labels")
    if data is None or labels is None:
        raise DataError(path, f"missing 'data' or 'labels' (keys: {sorted(map(str, batch))})")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(path, f"'data' must be a uint8 N x {ROW} array, got {desc}")
    try:
        y = np.asarray(labels)
    except (ValueError, TypeError):
        y = np.zeros(0)
    if y.ndim != 1 or (y.size and y.dtype.kind not in "iu"):
        raise DataError(path, "'labels' must be a list of integers")
    if len(y) != len(data):
        raise DataError(path, f"{len(data)} images but {len(y)} labels")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(path, f"labels {y.min()}..{y.max()} outside 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), y


def read_batch(path, num_classes=10):
    return parse_batch(safepickle.load(path), path, num_classes)


def read_cifar_dir(directory, num_classes=10):
    """{'train_x', 'train_y', 'test_x', 'test_y'} from a cifar-10-batches-py folder."""
    directory = Path(directory)
    parts = {}
    for split, names in (("train", CIFAR_TRAIN_BATCHES), ("test", CIFAR_TEST_BATCHES)):
        xs, ys = [], []
        for name in names:
            path = directory / name
            if not path.is_file():
                raise DataError(path, "missing (expected data_batch_1..5 and test_batch here)")
            x, y = read_batch(path, num_classes)
            xs.append(x)
            ys.append(y)
        parts[f"{split}_x"], parts[f"{split}_y"] = np.concatenate(xs), np.concatenate(ys)
    return parts


def batch_bytes(images, labels, batch_label, filenames=None):
    """The pickle of one batch exactly as the official files lay it out (protocol 2, str keys)."""
    images = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), ROW)
    if filenames is None:
        filenames = [f"synthetic_{i:05d}.png" for i in range(len(images))]
    batch = {"batch_label": batch_label, "labels": [int(v) for v in labels], "data": images,
             "filenames": list(filenames)}
    return pickle.dumps(batch, protocol=2)   # writing our own arrays; reading is always restricted


def write_cifar_dir(directory, train_x, train_y, test_x, test_y):
    """Write data_batch_1..5 (train split in five parts) and test_batch into directory."""
    directory = Path(directory)
    for i, (x, y) in enumerate(zip(np.array_split(train_x, 5), np.array_split(train_y, 5)), start=1):
        atomic_write_bytes(directory / f"data_batch_{i}", batch_bytes(x, y, f"training batch {i} of 5"))
    atomic_write_bytes(directory / "test_batch", batch_bytes(test_x, test_y, "testing batch 1 of 1"))
    atomic_write_bytes(directory / "batches.meta", pickle.dumps(
        {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                         "ship", "truck"], "num_cases_per_batch": len(train_x) // 5, "num_vis": ROW},
        protocol=2))


def extract_batches(archive, out_dir, subdir="cifar-10-batches-py"):
    """Copy the batch files out of the official tar.gz into out_dir, checking each one parses.

    Only the expected member names are read (never extractall: no path tricks, no links).
    """
    wanted = {f"{subdir}/{n}": n for n in CIFAR_TRAIN_BATCHES + CIFAR_TEST_BATCHES + ("batches.meta",)}
    found = set()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = wanted.get(member.name)
                if name is None or not member.isfile():
                    continue
                data = tar.extractfile(member).read()
                if name != "batches.meta":
                    parse_batch(safepickle.loads(data, f"{archive}:{member.name}"), f"{archive}:{member.name}")
                atomic_write_bytes(Path(out_dir) / name, data)
                found.add(name)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(archive, f"corrupt or truncated tar.gz ({e})") from None
    missing = sorted(set(CIFAR_TRAIN_BATCHES + CIFAR_TEST_BATCHES) - found)
    if missing:
        raise DataError(archive, f"archive lacks {subdir}/{', '.join(missing)}")
    return out_dir


def is_tar_gz(path):
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"\x1f\x8b" and str(path).endswith((".tar.gz", ".tgz"))
    except OSError:
        return False

