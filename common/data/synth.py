"""Small synthetic datasets written in the real on-disk format, with learnable class structure.

Each class has a fixed random template (smooth blobs); a sample is its template, shifted by up to
two pixels, with noise. Models learn it in an epoch or two, so tests can check that loss falls.
Numbers measured on synthetic data are never accuracy claims: results mark them `synthetic`.
"""
from pathlib import Path

import numpy as np

from common.data.idx import write_idx
from common.data.sources import IDX_FILES

SYNTH_SEED = 1234


def class_templates(num_classes, shape, seed=SYNTH_SEED):
    """num_classes smooth float templates in [0, 1], shape (C, H, W)."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    templates = np.zeros((num_classes, c, h, w), np.float32)
    for k in range(num_classes):
        for ch in range(c):
            for _ in range(3):
                cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
                sigma = rng.uniform(0.08, 0.18) * min(h, w)
                templates[k, ch] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2))
    return np.clip(templates / templates.max(axis=(1, 2, 3), keepdims=True), 0, 1)


def synthetic_arrays(n, num_classes, shape, seed, noise=0.25):
    """(images uint8 N x C x H x W, labels int64 N) with balanced classes."""
    rng = np.random.default_rng(seed)
    templates = class_templates(num_classes, shape)
    labels = (np.arange(n) % num_classes).astype(np.int64)
    rng.shuffle(labels)
    images = templates[labels]
    shifts = rng.integers(-2, 3, size=(n, 2))
    for i, (dy, dx) in enumerate(shifts):   # writing files once; not a training hot path
        images[i] = np.roll(images[i], (dy, dx), axis=(1, 2))
    images = images + rng.normal(0, noise, images.shape).astype(np.float32)
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8), labels


def write_synthetic(name, out_dir, n_train=2000, n_test=500, seed=SYNTH_SEED):
    """Write the synthetic version of `name` into out_dir in its real format; returns out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_x, train_y = synthetic_arrays(n_train, 10, (1, 28, 28), seed)
    test_x, test_y = synthetic_arrays(n_test, 10, (1, 28, 28), seed + 1)
    for role, array in (("train_images", train_x[:, 0]), ("train_labels", train_y),
                        ("test_images", test_x[:, 0]), ("test_labels", test_y)):
        write_idx(out_dir / IDX_FILES[role], array)
    return out_dir
