"""The paddle course's `mnist.json.gz` (seed 004) -> numpy.

The file is gzip JSON `[train, val, eval]`, each `[images, labels]`: images a list of 784 floats
per digit, already normalised to [-1, 1] (pixel / 127.5 - 1), labels integers 0..9.

Every reader in common.data yields uint8 0..255 images, so the floats are stored back as uint8
(round((v + 1) * 127.5)); the MNIST tasks' Normalize(0.5, 0.5) then gives the course's values
again, and the task normalisation applies unchanged whatever the source format. The file ships its
own validation split, returned as val_x / val_y (prepare_splits uses it instead of splitting train).
"""
import gzip
import json

import numpy as np

from dualbench.common.data.idx import read_bytes
from dualbench.common.errors import DataError
from dualbench.common.fsutil import atomic_write_bytes

SPLITS = ("train", "val", "eval")
PIXELS = 784
RANGE_SLACK = 1e-3   # floats written with a few decimals may stray just past +-1


def floats_to_uint8(values):
    """[-1, 1] floats -> uint8 0..255 (the inverse of pixel / 127.5 - 1)."""
    return np.rint((values.astype(np.float64) + 1.0) * 127.5).clip(0, 255).astype(np.uint8)


def uint8_to_floats(images):
    return images.astype(np.float64) / 127.5 - 1.0


def _split_arrays(path, name, part, num_classes):
    if not (isinstance(part, list) and len(part) == 2):
        raise DataError(path, f"{name} split: expected [images, labels], got {type(part).__name__}"
                              f"{' of length ' + str(len(part)) if isinstance(part, list) else ''}")
    images, labels = part
    if not isinstance(images, list) or not isinstance(labels, list):
        raise DataError(path, f"{name} split: images and labels must be JSON lists")
    if len(images) != len(labels):
        raise DataError(path, f"{name} split: {len(images)} images but {len(labels)} labels")
    try:
        x = np.array(images, dtype=np.float32) if images else np.zeros((0, PIXELS), np.float32)
    except (ValueError, TypeError):
        raise DataError(path, f"{name} images: expected lists of {PIXELS} numbers each") from None
    if x.ndim != 2 or x.shape[1] != PIXELS:
        raise DataError(path, f"{name} images: expected {PIXELS} numbers per image, got shape {x.shape}")
    if x.size and not np.isfinite(x).all():
        raise DataError(path, f"{name} images: NaN or infinite values")
    if x.size and (x.min() < -1 - RANGE_SLACK or x.max() > 1 + RANGE_SLACK):
        raise DataError(path, f"{name} images: values {x.min():g}..{x.max():g} outside [-1, 1] "
                              "(the course file is normalised to [-1, 1])")
    if not all(isinstance(v, int) and not isinstance(v, bool) or isinstance(v, float) and v.is_integer()
               for v in labels):
        raise DataError(path, f"{name} labels: expected integers")
    y = np.array(labels, dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(path, f"{name} labels {y.min()}..{y.max()} outside 0..{num_classes - 1}")
    return floats_to_uint8(x).reshape(-1, 1, 28, 28), y


def read_mnist_json(path, num_classes=10):
    """{'train_x', 'train_y', 'val_x', 'val_y', 'test_x', 'test_y'}: uint8 N x 1 x 28 x 28, int64."""
    raw = read_bytes(path)
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise DataError(path, f"not valid JSON ({e})") from None
    if not (isinstance(data, list) and len(data) == 3):
        raise DataError(path, "expected a JSON list [train, val, eval] of [images, labels] pairs, got "
                              f"{type(data).__name__}{' of length ' + str(len(data)) if isinstance(data, list) else ''}")
    out = {}
    for key, name, part in zip(("train", "val", "test"), SPLITS, data):
        out[f"{key}_x"], out[f"{key}_y"] = _split_arrays(path, name, part, num_classes)
    return out


def write_mnist_json(path, splits, decimals=6):
    """Write {'train': (x, y), 'val': ..., 'eval': ...} (uint8 N x 784 or N x 1 x 28 x 28) in the course format."""
    payload = []
    for name in SPLITS:
        x, y = splits[name]
        floats = np.round(uint8_to_floats(np.asarray(x).reshape(len(x), PIXELS)), decimals)
        payload.append([floats.tolist(), [int(v) for v in y]])
    text = json.dumps(payload, separators=(",", ":"))
    atomic_write_bytes(path, gzip.compress(text.encode("ascii"), compresslevel=6, mtime=0))
