"""The backend interface: what the engines may call on a backend, and nothing else.

A backend is a package `dualbench.backends.<name>` (torch, paddle) with one module per part below, each
module holding exactly the functions of its Protocol with the same parameters and defaults
(tests/test_architecture.py checks both backends against this file). Reach a part with
`dualbench.backends.load(name, part)`; `load(name)` is the package, whose NAME, CHECKPOINT_SUFFIX and
core parts (device, models, data, weights, train) are attributes. Modules satisfy these Protocols
structurally, so a type checker can read `speed: Speed = load("torch", "speed")`.

Words used below: `dev` is the backend's device object (resolve_device); `model` its module class
(torch.nn.Module, paddle.nn.Layer); `task` a common.tasks.Task; `spec` a common.tasks.ModelSpec;
canonical weights are {name: numpy array} in torch's names and layout (Linear weights [out, in], BatchNorm
`running_mean`/`running_var`), whatever the framework; native names and layout are the framework's own.
"""
from typing import Protocol

PARTS = ("device", "models", "data", "weights", "train", "inspect", "speed")


class Device(Protocol):
    """Devices, math threads, seeding and what a result row records about them."""

    def resolve_device(self, name="cpu"):
        """'cpu' | 'gpu' | 'auto' -> the framework's device (a one-line UserError when absent)."""

    def configure(self, threads, device="cpu", deterministic=False):
        """Pin the math threads and pick the device; returns (dev, the columns to record in result rows)."""

    def describe(self, dev, threads=None):
        """{framework_version, device, device_name, threads} for the rows."""

    def seed(self, value):
        """Seed the framework's generators (numpy draws nothing in the training path)."""

    def synchronize(self, dev):
        """Wait until the device has finished its queued work (a no-op on CPU); every clock read follows one."""


class Models(Protocol):
    """Native models built from a common ModelSpec, with the spec's layer names."""

    def build_layer(self, layer):
        """One common LayerSpec as the framework's layer."""

    def build_model(self, spec):
        """A sequential model of named layers; the spec's initialisation is applied natively."""

    def count_parameters(self, model):
        """Trainable parameters (BatchNorm statistics excluded, in both frameworks)."""


class Data(Protocol):
    """The framework's own Dataset/DataLoader over the common numpy arrays and batch order."""

    def make_loader(self, x, y, batches, dev, transform=None):
        """A native DataLoader yielding the given index batches of (x, y); transform: common.data.augment's
        batch function (the same numpy code in both backends)."""

    def to_device(self, batch, dev):
        """(inputs, labels) of a loader's batch on the device."""


class Weights(Protocol):
    """Canonical weights of the built-in tasks' models, and checkpoint files."""

    def export_weights(self, model):
        """The model's state as canonical weights (BatchNorm statistics included)."""

    def import_weights(self, model, weights):
        """Copy canonical weights into the model; names and shapes must match exactly."""

    def save_checkpoint(self, model, path):
        """The framework's own checkpoint (.pt, .pdparams) of the model's state."""

    def load_checkpoint(self, model, path):
        """Load a checkpoint without unpickling arbitrary objects."""

    def read_state_file(self, path):
        """{native name: numpy} from a checkpoint file (a state nested under 'state_dict' or 'model' too)."""

    def write_state_file(self, arrays, path):
        """Save {native name: numpy} as the framework's checkpoint, atomically."""


class Train(Protocol):
    """Training and evaluation: loss, optimizer, scheduler, regularisers, clipping, one epoch."""

    def primary_output(self, value, leaf=0):
        """The tensor a loss is computed on: the output itself, or the leaf-th tensor of a tuple/list/dict
        output in flattened order."""

    def call_model(self, model, xb):
        """The model on a batch: one tensor, or (args, kwargs) for a model with several inputs."""

    def make_loss(self, task):
        """The task's data loss on output task.output_leaf: ce | mse_value | mse_onehot | mse | sum | ce_last."""

    def predict_classes(self, out, num_classes):
        """argmax for class scores; the rounded value (clipped to the classes) for a 1-output regressor."""

    def make_optimizer(self, task, model, learning_rate=None):
        """The task's optimizer (learning_rate: default the task's)."""

    def make_scheduler(self, task, optimizer=None):
        """The task's learning-rate schedule (None for a constant rate)."""

    def make_state(self, task, model, dev):
        """A TrainState (task, model, optimizer, scheduler, loss, dev) with the model on the device."""

    def regularisation(self, task, model):
        """Loss-term regularisers (L1, L2) over the trainable parameters, or None."""

    def forward_objective(self, state, xb, yb):
        """(model output, data loss, data loss + regularisers) of one batch, on the device."""

    def train_step(self, state, xb, yb):
        """One optimizer step; returns (data loss, model output), both still on the device."""

    def train_epoch(self, state, loader, on_step=None):
        """One pass over the loader in train mode: {loss, acc, n, diverged_step, ...}."""

    def parameters_finite(self, model):
        """False when any parameter or BatchNorm statistic holds NaN/Inf."""

    def evaluate(self, state, loader):
        """{loss, acc, n} in eval mode, no autograd."""

    def output_gradient(self, state, loader):
        """Mean per-sample L2 norm of d(data loss)/d(logits), without an update (eval mode)."""

    def scheduler_step(self, state, val_loss=None):
        """Once per epoch, after validation (a plateau schedule watches the validation loss)."""

    def current_lr(self, state):
        """The learning rate the next step uses."""

    def predict(self, model, x, num_classes, dev):
        """(class predictions, raw outputs) for a float32 numpy batch."""


class Inspect(Protocol):
    """Looking inside any model for `dualbench parity`: modules, calls, tensors, gradients, dropout masks."""

    def framework_version(self):
        """The framework's version string."""

    def is_model(self, obj):
        """True for the framework's module class (what a model SPEC must return)."""

    def copy_model(self, model):
        """An independent deep copy (the checks never change a user's model)."""

    def to_tensor(self, array):
        """numpy -> tensor, copied, dtype kept (float32 stays float32, int64 stays int64)."""

    def to_numpy(self, tensor):
        """tensor -> numpy, copied, on the host."""

    def tensors_of(self, value):
        """The tensors in a module's output (a tensor, or nested tuples/lists/dicts of them), as numpy."""

    def set_mode(self, model, train):
        """Train mode (True) or eval mode (False)."""

    def cast_model(self, model, dtype):
        """'float32' | 'float64': parameters and BatchNorm running statistics alike."""

    def module_table(self, model):
        """{qualified name: {"type", "bases", "tensors": {local name: shape}, "config", "unit", "composite"}}
        of every module that is a leaf, holds tensors itself, is a unit (attention, RNN: one module with its
        submodules' tensors) or a composite (Transformer layers: recorded beside their submodules). A
        tensor held by two modules is listed once."""

    def state_shapes(self, model):
        """{state name: shape}, without copying a tensor."""

    def module_config(self, module):
        """The settings of a layer that change what it computes, under framework-neutral keys (the same in
        both backends): what the diagnosis replays with a convention flipped."""

    def state_arrays(self, model, names=None):
        """The state's tensors (or only those named), under their native names and in their native layout."""

    def load_state_arrays(self, model, arrays):
        """Copy numpy arrays into the named state tensors (same shapes; other tensors are left alone)."""

    def watch_modules(self, model, callback, names=None):
        """Call callback(name, inputs, outputs, kwargs, layout) after every call of the named modules (numpy
        lists, inputs read before the module runs, keyword tensors (nested as passed) and flags, where each
        input sat in the positional arguments); returns a function that removes the hooks."""

    def inject_dropout_masks(self, model, mask_for, keys=None):
        """Give the dropout modules the mask mask_for(key, input_shape, p, channelwise) in train mode, so
        that both frameworks drop the same values; returns a function that removes the hooks."""

    def model_call(self, inputs):
        """(args, kwargs) as tensors from numpy inputs: one array, a list of positional arrays, or
        {"args": [...], "kwargs": {name: array}}."""

    def no_fastpath(self):
        """A context without fused eval paths that skip submodules' hooks (torch's MultiheadAttention and
        Transformer layers)."""

    def forward(self, model, inputs, train):
        """Run the model on numpy inputs (see model_call), without autograd."""

    def output_leaves(self, value, path="output"):
        """[(path, numpy)] of a model's output, each tensor named by where it sits (output[1][0])."""

    def record_calls(self, model, inputs, train, names=None):
        """One forward pass recording every module call: (calls in execution order {module, call, inputs,
        kwargs, outputs}, the model's output leaves or None, the error message when a module raised)."""

    def call_module(self, model, name, inputs, train, kwargs=None, layout=None):
        """Run one module alone on numpy inputs and keyword arguments (as captured from a call, layout
        putting the flat inputs back where they sat); returns its outputs (numpy)."""

    def functional_dropout_off(self, model):
        """Dropout inside a module's own computation (attention weights, between RNN layers) set to 0:
        ([(module name, p)] changed, a function that restores them)."""

    def trainable_names(self, model):
        """Native names of the parameters an optimizer updates."""

    def gradients(self, model, names=None):
        """{native name: gradient} of the trainable parameters (or those named; zeros where none)."""

    def loss_and_gradients(self, state, x, y):
        """Forward in the current mode, data loss + regularisers, backward, no step:
        {"loss", "objective", "output"}; the gradients stay in the model."""


class Speed(Protocol):
    """What `dualbench bench` needs beyond training: settings, compilation, mixed precision, pre-loaded
    batches, inference and peak memory."""

    DEFAULT_KNOBS: dict   # {knob: the framework's default}, the knobs timings.settings tunes

    def apply_settings(self, knobs, dev):
        """Set every speed switch for the next cell (the cell's value, else the default); returns the
        effective values of the switches that matter on the device (what the row records)."""

    def compile_model(self, state):
        """Replace the eager model by the compiled one (the first step's time then includes compilation)."""

    def amp_dtype(self, dev):
        """The autocast dtype on this device."""

    def amp_context(self, dev, enabled=True):
        """Autocast for the forward pass and loss, or a no-op when disabled."""

    def make_scaler(self, dev, enabled=True):
        """A loss scaler for float16 on GPU; None where no scaling is needed."""

    def make_step(self, state, amp=False):
        """The train-step function (state, xb, yb) -> (loss, output) for a precision."""

    def make_infer_step(self, model):
        """Inference for one batch: eval mode, no autograd."""

    def preload(self, x, y, batches, dev):
        """Batches as tensors already on the device: the bare loop's input (no reader in the timing)."""

    def reset_peak_memory(self, dev):
        """Start a new peak: the allocator's on GPU, the process RSS on CPU."""

    def peak_memory(self, dev):
        """(MiB, kind): allocator peak on GPU ('gpu_allocated'), peak RSS of the process on CPU ('rss')."""
