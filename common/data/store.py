"""How things go into the data cache: whole folders swapped in atomically, decoded-array caches
keyed by the source's checksum, and a manifest of what was prepared from where.

Layout under the cache root (`$DUALBENCH_DATA`):
  <dataset>/             the dataset's files in their real format, plus MANIFEST.json
  downloads/<file>       verified downloads; `<file>.part` while a download is in progress or
                         was interrupted (resumed by the next `dualbench data prepare`, never read)
  arrays/<name>-<sha>-<tag>.npz   decoded arrays (Food-11 JPEGs, mnist.json.gz floats)
"""
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from dualbench.common.errors import DataError
from dualbench.common.fsutil import atomic_path, atomic_write_text

MANIFEST = "MANIFEST.json"


@contextlib.contextmanager
def staged_dir(dest, replace=True):
    """Yield an empty folder beside `dest`; on success it becomes `dest` in one rename.

    A failure removes the staging folder, so a half-built dataset is never visible. With
    replace=False an existing `dest` wins (another process built it first) and ours is dropped.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent))
    try:
        yield tmp
        if dest.exists():
            if not replace:
                return
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
            os.replace(dest, old / dest.name)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(tmp, dest)
            except OSError:
                if not (dest.is_dir() and not replace):
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def array_cache_path(cache_root, name, source_sha256, tag):
    return Path(cache_root) / "arrays" / f"{name}-{source_sha256[:16]}-{tag}.npz"


def load_arrays(path):
    """The arrays of a cache file, or None when it is absent or unreadable (then rebuilt)."""
    if not Path(path).is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return None


def save_arrays(path, arrays):
    """Write arrays (uncompressed npz: loading it is a memcpy) atomically."""
    with atomic_path(path, suffix=".npz.part") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def cached_arrays(cache_root, name, source_sha256, tag, build):
    """Arrays from the cache when the source checksum and tag match, else build() and store them."""
    path = array_cache_path(cache_root, name, source_sha256, tag)
    arrays = load_arrays(path)
    if arrays is None:
        arrays = build()
        save_arrays(path, arrays)
    return arrays


def file_digest(path, algorithm="sha256"):
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_files(directory, paths):
    """{path relative to directory: sha256} for the manifest."""
    return {Path(p).relative_to(directory).as_posix(): file_digest(p) for p in paths}


def write_manifest(directory, dataset, source, files, extra=None):
    """MANIFEST.json: where the files came from and the sha256 of each (checked by `data verify`)."""
    record = {"dataset": dataset, "source": source, "files": files, **(extra or {})}
    atomic_write_text(Path(directory) / MANIFEST, json.dumps(record, indent=1, sort_keys=True) + "\n")


def read_manifest(directory):
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(path, f"unreadable manifest ({e})") from None
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        raise DataError(path, "malformed manifest (expected an object with 'files')")
    return record
