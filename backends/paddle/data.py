"""Native Dataset/DataLoader over the common numpy arrays and batch order.

One item of the dataset is one whole batch (fancy indexing in numpy), so the hot path does no
per-sample Python work; the DataLoader runs with automatic batching off (batch_size=None).

paddle's DataLoader reads items in a background thread even with num_workers=0, and an exception
raised there kills the thread without closing its queue: the loop waiting for the next batch hangs
forever (paddle 3.3; no setting keeps loading in the calling thread). So the dataset catches the
error, ends the thread cleanly, and the loader's iterator raises it in the caller once the batches
read before it are consumed.
"""
import numpy as np
from paddle.io import DataLoader, Dataset


class BatchDataset(Dataset):
    """Item i is batch i of the given order: (float32 images, int64 labels)."""

    def __init__(self, x, y, batches, transform=None):
        self.x, self.y, self.batches, self.transform = x, y, batches, transform
        self.error = None   # the exception of the item that failed in paddle's loader thread

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        try:
            idx = self.batches[i]
            xb = np.take(self.x, idx, axis=0)   # a little faster than x[idx] for row gathers
            if self.transform is not None:
                xb = self.transform(xb, i)
            return xb, self.y[idx]
        except Exception as e:   # noqa: BLE001 - re-raised in the caller by _Loader
            self.error = e
            return None          # paddle's loader thread stops at a None item and closes its queue


class _Loader(DataLoader):
    """paddle's DataLoader, raising an error of the dataset in the iterating thread instead of hanging."""

    def __iter__(self):
        dataset = self.dataset
        dataset.error = None
        for batch in super().__iter__():
            yield batch
        if dataset.error is not None:
            error, dataset.error = dataset.error, None
            raise error


def make_loader(x, y, batches, dev, transform=None):
    """transform: dualbench.common.data.augment's batch function (the same numpy code in both backends)."""
    return _Loader(BatchDataset(x, y, batches, transform), batch_size=None, shuffle=False, num_workers=0)


def to_device(batch, dev):
    xb, yb = batch
    if dev == "cpu":
        return xb, yb
    return xb.cuda(), yb.cuda()
