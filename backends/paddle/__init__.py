"""The PaddlePaddle backend: native paddle.nn.Layer models, DataLoader, optimizers, lr schedulers, .pdparams."""
import contextlib
import io
import os
import warnings

# Quiet paddle's import-time chatter (glog warnings, "No ccache found") before paddle loads.
os.environ.setdefault("GLOG_minloglevel", "2")
warnings.filterwarnings("ignore", message=".*ccache.*")
# BatchNorm in train mode always tracks running statistics, as torch does; the notice is noise here
warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")

# paddle prints an OMP_NUM_THREADS advice on import when threads are pinned above 1 (we do that on
# purpose, the same for both frameworks); keep it out of the user's terminal.
with contextlib.redirect_stderr(io.StringIO()):
    import paddle  # noqa: F401

from dualbench.backends.paddle import device, models, data, weights, train  # noqa: F401

NAME = "paddle"
CHECKPOINT_SUFFIX = ".pdparams"
