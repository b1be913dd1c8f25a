"""Data for cells that run on another machine (`--executor ray`): the node's own copy, checked against
the checksum the driver recorded, or the driver's arrays shipped with the cell.

A node never substitutes data silently: a dataset that is missing on the node, or whose files differ
from the driver's, is a one-line problem naming the node and the dataset, and the cell becomes a
`failed` row. For small datasets the driver can instead ship its arrays (through Ray's object store);
the worker then reads exactly the driver's arrays and records the driver's checksum.
"""
import json
import os
import socket
from pathlib import Path

import numpy as np

from dualbench.common.data.catalog import get_info
from dualbench.common.data.files import data_files, dataset_sha256
from dualbench.common.data.sources import Dataset, load_dataset, locate, missing_message
from dualbench.common.errors import UserError

SPLITS = ("train_x", "train_y", "test_x", "test_y", "val_x", "val_y")


def where_on_this_machine(name, data_path=None):
    """The dataset's location here; a synthetic dataset is generated into the cache first (its files,
    and so its checksum, are the same wherever it is generated)."""
    where = locate(name, data_path)
    if where is None and get_info(name).synthetic and data_path is None:
        from dualbench.common.data.synth import install_synthetic
        install_synthetic(name)
        where = locate(name)
    return where


def driver_checksum(name, data_path=None):
    """The sha256 that every node's copy must have: the driver's (a missing dataset is a UserError here)."""
    where = where_on_this_machine(name, data_path)
    if where is None:
        raise UserError(missing_message(name))
    return dataset_sha256(get_info(name), where)


_checked = {}   # (name, data_path) -> (file sizes and mtimes, sha256): a worker process hashes each copy once


def _fingerprint(files):
    return tuple((str(f), os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files)


def node_dataset_problem(name, data_path, expected):
    """None when this node has the dataset with the driver's checksum, else one line naming the node and
    the dataset (missing, unreadable, or different files)."""
    host = socket.gethostname()
    try:
        where = where_on_this_machine(name, data_path)
        if where is None:
            return (f"dataset '{name}' is not on node {host} ({missing_message(name).split(': ', 1)[-1]}; "
                    "or use --ship-data)")
        info = get_info(name)
        files = data_files(info, where)
        fingerprint = _fingerprint(files)
        seen = _checked.get((name, data_path))
        if seen is None or seen[0] != fingerprint:
            seen = _checked[(name, data_path)] = (fingerprint, dataset_sha256(info, where))
        found = seen[1]
    except (UserError, OSError) as e:
        return f"dataset '{name}' on node {host}: {e}"
    if found != expected:
        return (f"dataset '{name}' on node {host} ({where}) has sha256 {found[:16]}…, the driver's has "
                f"{expected[:16]}…: not substituted (copy the driver's files to the node, or use --ship-data)")
    return None


def shipped_arrays(name, data_path=None):
    """The driver's dataset as plain arrays plus its identity, to put into Ray's object store."""
    dataset = load_dataset(name, data_path, progress=False)
    arrays = {k: getattr(dataset, k) for k in SPLITS if getattr(dataset, k) is not None}
    meta = {"name": dataset.name, "sha256": dataset.sha256, "synthetic": dataset.synthetic,
            "source": f"{dataset.source} on {socket.gethostname()}, shipped by the driver"}
    return {"arrays": arrays, "meta": meta}


def save_shipped(path, shipped):
    """Write shipped arrays to a node-local file for the worker process (uncompressed npz, no pickles)."""
    path = Path(path)
    with open(path, "wb") as f:
        np.savez(f, **shipped["arrays"], meta=np.array(json.dumps(shipped["meta"])))
    return str(path)


def load_shipped(path):
    """The Dataset a worker trains on when the driver shipped it: the driver's arrays and checksum."""
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        arrays = {k: npz[k] for k in SPLITS if k in npz.files}
    return Dataset(meta["name"], meta["source"], meta["sha256"], bool(meta["synthetic"]), arrays["train_x"],
                   arrays["train_y"], arrays["test_x"], arrays["test_y"], arrays.get("val_x"), arrays.get("val_y"))
