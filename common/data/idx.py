"""MNIST / Fashion-MNIST IDX files (raw or gzip) -> numpy, with every header check named.

Format: big-endian magic (0x00 0x00 dtype ndim), one int32 per dimension, then the data.
Images are idx3 (magic 2051, uint8 N x 28 x 28), labels idx1 (magic 2049, uint8 N).
"""
import gzip
import zlib

import numpy as np

from dualbench.common.errors import DataError
from dualbench.common.fsutil import atomic_write_bytes

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


def read_bytes(path):
    """The file's bytes, gunzipped when it is gzip; a truncated or corrupt gzip is a DataError."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(path, f"cannot read ({e.strerror or e})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise DataError(path, f"corrupt or truncated gzip ({e})") from None
    return raw


def read_idx(path, expected_magic):
    data = read_bytes(path)
    if len(data) < 8:
        raise DataError(path, f"too short for an IDX header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise DataError(path, f"wrong IDX magic {magic} (expected {expected_magic}: "
                              f"{'images' if expected_magic == IMAGES_MAGIC else 'labels'})")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(path, f"IDX size mismatch: header says {dims} ({expected} bytes), file has {len(data)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_pair(images_path, labels_path):
    """(images uint8 N x 1 x H x W, labels int64 N)."""
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataError(labels_path, f"{labels.shape[0]} labels for {images.shape[0]} images in {images_path}")
    return images[:, None, :, :], labels.astype(np.int64)


def write_idx(path, array, gz=None):
    """Write a uint8 array as IDX, atomically (gzip when gz, default: the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = IMAGES_MAGIC if array.ndim == 3 else LABELS_MAGIC
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    if str(path).endswith(".gz") if gz is None else gz:
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    atomic_write_bytes(path, payload)
