"""The PaddlePaddle backend: native paddle.nn.Layer models, DataLoader, optimizers, lr schedulers, .pdparams."""
import contextlib
import io

from dualbench.backends import quiet_framework_imports

quiet_framework_imports()   # before paddle loads

# paddle prints an OMP_NUM_THREADS advice on import when threads are pinned above 1 (we do that on
# purpose, the same for both frameworks); keep it out of the user's terminal.
with contextlib.redirect_stderr(io.StringIO()):
    import paddle  # noqa: F401

from dualbench.backends.paddle import device, models, data, weights, train  # noqa: F401

NAME = "paddle"
CHECKPOINT_SUFFIX = ".pdparams"
