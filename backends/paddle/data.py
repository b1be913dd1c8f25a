"""Native Dataset/DataLoader over the common numpy arrays and batch order.

One item of the dataset is one whole batch (fancy indexing in numpy), so the hot path does no
per-sample Python work; the DataLoader runs with automatic batching off (batch_size=None).
"""
from paddle.io import DataLoader, Dataset


class BatchDataset(Dataset):
    """Item i is batch i of the given order: (float32 images, int64 labels)."""

    def __init__(self, x, y, batches):
        self.x, self.y, self.batches = x, y, batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        idx = self.batches[i]
        return self.x[idx], self.y[idx]


def make_loader(x, y, batches, dev):
    return DataLoader(BatchDataset(x, y, batches), batch_size=None, shuffle=False, num_workers=0)


def to_device(batch, dev):
    xb, yb = batch
    if dev == "cpu":
        return xb, yb
    return xb.cuda(), yb.cuda()
