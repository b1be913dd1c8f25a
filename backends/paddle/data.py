"""Native Dataset/DataLoader over the common numpy arrays and batch order.

One item of the dataset is one whole batch (fancy indexing in numpy), so the hot path does no
per-sample Python work; the DataLoader runs with automatic batching off (batch_size=None).
"""
import numpy as np
from paddle.io import DataLoader, Dataset


class BatchDataset(Dataset):
    """Item i is batch i of the given order: (float32 images, int64 labels)."""

    def __init__(self, x, y, batches, transform=None):
        self.x, self.y, self.batches, self.transform = x, y, batches, transform

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        idx = self.batches[i]
        xb = np.take(self.x, idx, axis=0)   # a little faster than x[idx] for row gathers
        if self.transform is not None:
            xb = self.transform(xb, i)
        return xb, self.y[idx]


def make_loader(x, y, batches, dev, transform=None):
    """transform: common.data.augment's batch function (the same numpy code in both backends)."""
    return DataLoader(BatchDataset(x, y, batches, transform), batch_size=None, shuffle=False, num_workers=0)


def to_device(batch, dev):
    xb, yb = batch
    if dev == "cpu":
        return xb, yb
    return xb.cuda(), yb.cuda()
