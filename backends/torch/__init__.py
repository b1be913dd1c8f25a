"""The PyTorch backend: native nn.Module models, DataLoader, optimizers, schedulers, .pt checkpoints."""
from dualbench.backends.torch import device, models, data, weights, train  # noqa: F401

NAME = "torch"
CHECKPOINT_SUFFIX = ".pt"
