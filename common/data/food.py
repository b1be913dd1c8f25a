"""Food-11 image folders (seed 000) -> numpy, decoded once and cached as arrays.

Layout: training/, validation/, evaluation/, each holding `<label>_<n>.jpg` (label 0..10). Each
image is decoded with Pillow, converted to RGB and resized to the task's size with bilinear
filtering (what torchvision's transforms.Resize does to a PIL image in the seed), then stored as
uint8 N x 3 x H x W. Decoding lives in common, so both backends get the very same arrays.

Decoding ~16k JPEGs takes minutes, so the arrays are cached under $DUALBENCH_DATA/arrays/, keyed
by the sha256 of the source files (names included, they carry the labels) and the size: the second
run loads them in a second, and any change to the folder decodes again.
"""
import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from dualbench.common.data.catalog import FOOD_SPLITS
from dualbench.common.data.store import cached_arrays
from dualbench.common.errors import DataError

NAME_PATTERN = re.compile(r"^(\d+)_(\d+)\.(jpe?g|png)$", re.IGNORECASE)


def list_images(root, num_classes=11):
    """{split: [(path, label), ...]} in (label, n) order; any stray or misnamed file is a DataError.

    Hidden files (.DS_Store and the like) are skipped; anything else must be a labelled image.
    """
    root = Path(root)
    out = {}
    for split, folder in FOOD_SPLITS.items():
        directory = root / folder
        if not directory.is_dir():
            raise DataError(directory, "missing (a Food-11 folder holds training/, validation/ and evaluation/)")
        items = []
        for entry in os.scandir(directory):
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            match = NAME_PATTERN.match(entry.name)
            if not entry.is_file() or match is None:
                raise DataError(path, "not a Food-11 image (expected files named <label>_<n>.jpg)")
            label, number = int(match.group(1)), int(match.group(2))
            if label >= num_classes:
                raise DataError(path, f"label {label} outside 0..{num_classes - 1}")
            items.append((label, number, entry.name, path))
        if not items:
            raise DataError(directory, "no images")
        items.sort()
        out[split] = [(path, label) for label, _, _, path in items]
    return out


def image_files(root, num_classes=11):
    """Every image of the folder in a fixed order (what the dataset checksum covers)."""
    return [p for items in list_images(root, num_classes).values() for p, _ in items]


def decode_image(path, size):
    """uint8 3 x H x W: RGB, resized to size=(H, W) with bilinear filtering."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im = im.convert("RGB")
                if im.size != (size[1], size[0]):
                    im = im.resize((size[1], size[0]), Image.BILINEAR)
                array = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        raise DataError(path, f"not a readable image ({type(e).__name__}: {e})") from None
    return array.transpose(2, 0, 1)


def decode_folder(root, size, num_classes=11, progress=True):
    listing = list_images(root, num_classes)
    total = sum(len(v) for v in listing.values())
    arrays = {}
    with tqdm(total=total, unit="img", desc=f"decoding {Path(root).name}", file=sys.stderr,
              disable=None if progress else True, leave=False) as bar:
        for split, items in listing.items():
            x = np.empty((len(items), 3, *size), np.uint8)
            for i, (path, _) in enumerate(items):
                x[i] = decode_image(path, size)
                bar.update()
            arrays[f"{split}_x"] = x
            arrays[f"{split}_y"] = np.array([label for _, label in items], np.int64)
    return arrays


def read_food_folder(root, size=(128, 128), num_classes=11, cache_root=None, source_sha256=None,
                     progress=True):
    """{'train_x', 'train_y', 'val_x', 'val_y', 'test_x', 'test_y'}, from the array cache when it
    was built from the same files at the same size."""
    build = (lambda: decode_folder(root, size, num_classes, progress))
    if cache_root is None or source_sha256 is None:
        return build()
    return cached_arrays(cache_root, "food", source_sha256, f"{size[0]}x{size[1]}", build)
