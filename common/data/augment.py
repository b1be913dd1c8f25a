"""Training augmentation on numpy batches, identical in both backends.

It runs inside each backend's Dataset on the batch it is about to hand over, with a generator
seeded by (run seed, epoch, batch index): torch and paddle see bit-identical augmented batches.
"""
import numpy as np

AUGMENTATIONS = ("none", "hflip")


def batch_transform(kind, seed, epoch):
    """A function (batch array, batch index) -> augmented batch, or None for 'none'."""
    if kind == "none":
        return None
    if kind == "hflip":
        def hflip(xb, index):
            flip = np.random.default_rng([seed, epoch, index, 17]).random(len(xb)) < 0.5
            xb[flip] = xb[flip][..., ::-1]   # xb is a fresh copy from fancy indexing
            return xb
        return hflip
    raise ValueError(f"unknown augmentation {kind!r} (known: {', '.join(AUGMENTATIONS)})")
