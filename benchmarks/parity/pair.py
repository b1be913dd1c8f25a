"""What the parity engine checks: a pair of models, one per framework, with their mapping and inputs.

Two sources of pairs, one engine:
- a task (common.tasks): both models are built from one spec, so the mapping is known by name,
  and the batches, start weights, loss and optimizer come from the task;
- a model pair: any torch model and any paddle model (`--torch SPEC --paddle SPEC`, or
  compare_models()), matched by running them (dualbench.parity.match) or through a mapping file;
  the loss, optimizer and labels come from the options.

A *side* (Side) is one framework's functions; any of them can be replaced (tests break a
side on purpose). Its weights move through the pair's mapping unless export_weights or
import_weights is replaced.
"""
import zlib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from dualbench.common.errors import UserError
from dualbench.common.init import shared_weights
from dualbench.common.tasks import DataSpec, Optimizer, Protocol, Task, forward_macs
from dualbench.parity import transforms
from dualbench.parity.inputs import (batch_size, bind_pair, check_loss, default_loss, describe_inputs, for_side,
                                     input_renames, make_labels, rows_sliceable)
from dualbench.parity.kinds import BATCHNORM_KINDS, TENSOR_RULES
from dualbench.parity.mapping import from_canonical, to_canonical

DROPOUT_POLICY = "identical numpy masks injected into both"
DEFAULT_STEPS = 10          # tasks
DEFAULT_PAIR_STEPS = 3      # model pairs
DEFAULT_LR = {"sgd": 0.01, "momentum": 0.01, "adam": 1e-3}


@dataclass
class ParityConfig:
    steps: Optional[int] = None         # default: DEFAULT_STEPS (tasks, fewer above FLOAT32_STEP_BUDGET), 3 (pairs)
    batch_size: Optional[int] = None     # tasks: default the task's batch size, at most 32
    seed: int = 0
    optimizer: Optional[str] = None      # sgd | momentum | adam: override the task's optimizer
    lr: Optional[float] = None           # model pairs: learning rate (default per optimizer)
    atol: Optional[float] = None         # override every float32 tolerance (weights stay exact)
    rtol: Optional[float] = None
    float64: object = True               # True | False | "auto" (only when a float32 check fails)
    float64_batch: Optional[int] = None   # default: the float32 batch (when the budgets allow)
    dataset: Optional[str] = None        # real batches instead of random ones
    data_path: Optional[Path] = None
    start_weights: Optional[dict] = None  # canonical start weights; default: common.init.shared_weights
    batches: Optional[list] = None        # [(x float32, y int64)] per step, instead of random ones
    weights: str = "torch"               # model pairs: start from torch's | paddle's | random weights
    output_leaf: int = 0                 # model pairs: the output tensor the loss is on (flattened order)


@dataclass
class Pair:
    name: str
    task: Task                  # loss, optimizer, regularisers, schedule (a plain one for model pairs)
    spec: object                # what side.build_model() receives: the task's ModelSpec, or None
    mapping: object             # dualbench.parity.mapping.Mapping
    batches: list               # [(inputs, labels)] numpy, one per training step
    start: dict                 # canonical start weights
    batch64: int                # float64 repeat: batch size and steps
    steps64: int
    float64: object = True
    origin: str = "task"        # task | models
    tables: dict = None         # {side: inspect.module_table(model)}: types, tensors, settings
    prototypes: dict = None     # {side: a model built once}; the checks work on copies of it
    timings: dict = None        # seconds per stage, in order (building, matching, then the checks)
    notes: list = None          # what the report should say besides the rows (a check skipped, and why)
    start64: dict = None        # the start weights in float64, made once (a big model's copy is large)
    one_sided: dict = None      # {torch module: {torch local name: array}} of tensors only paddle's layer holds
    functional_dropout: list = None   # "side module (p=...)" whose own dropout was set to 0 for the check

    def start_in(self, dtype):
        """The start weights in dtype ('float32' or 'float64')."""
        from dualbench.parity.transfer import canonical_dtype
        if dtype == "float32":
            return self.start
        if self.start64 is None:
            self.start64 = canonical_dtype(self.start, "float64")
        return self.start64

    def fresh(self, sides, name):
        """A new copy of one side's model (building a model can take seconds; copying it less)."""
        return sides[name].inspect.copy_model(self.prototypes[name])


# ---------------------------------------------------------------------------------------------
# Sides


@dataclass
class Side:
    """One framework as the parity checks see it: the functions they call, any of which a caller may
    replace (tests break a side on purpose). The weight functions are filled in by bind_side from the
    pair's mapping unless replaced; so are import_some, gradients, trainable and module_names."""
    name: str
    inspect: object                 # the backend's inspect part (backends.interface.Inspect)
    version: str
    build_model: Callable
    make_state: Callable            # (task, model) -> TrainState on the CPU
    train_step: Callable
    scheduler_step: Callable
    current_lr: Callable
    seed: Callable
    to_inputs: Callable
    to_labels: Callable
    export_weights: Optional[Callable] = None   # (model, names=None) -> canonical weights
    import_weights: Optional[Callable] = None   # (model, canonical weights)
    import_some: Optional[Callable] = None      # part of the state, tensor by tensor
    gradients: Optional[Callable] = None        # (model, names=None) -> canonical gradients
    trainable: Optional[Callable] = None        # model -> canonical names the optimizer updates
    module_names: Optional[dict] = None         # {torch module: this side's module}
    task_import_weights: Optional[Callable] = None   # the backend's own weight code for built-in tasks,
    task_export_weights: Optional[Callable] = None   # checked against the mapping (transfer.backend_weight_rows)


def load_side(name, **overrides):
    """A backend as the Side parity calls; keyword arguments replace any of its functions."""
    from dualbench import backends
    backend, inspect = backends.load(name), backends.load(name, "inspect")
    dev = backend.device.resolve_device("cpu")
    side = Side(name=name, inspect=inspect, version=inspect.framework_version(),
                build_model=backend.models.build_model,
                make_state=lambda task, model: backend.train.make_state(task, model, dev),
                train_step=backend.train.train_step, scheduler_step=backend.train.scheduler_step,
                current_lr=backend.train.current_lr, seed=backend.device.seed,
                to_inputs=lambda x: model_inputs(inspect, name, x), to_labels=inspect.to_tensor,
                task_import_weights=backend.weights.import_weights, task_export_weights=backend.weights.export_weights)
    unknown = set(overrides) - {f.name for f in fields(Side)}
    if unknown:
        raise ValueError(f"unknown side function {sorted(unknown)[0]!r}")
    return replace(side, **overrides)


def model_inputs(inspect, name, x):
    """A batch as the side's model takes it: a tensor, or (args, kwargs) for several inputs (parity.inputs)."""
    x = for_side(x, name)
    return inspect.to_tensor(x) if isinstance(x, np.ndarray) else inspect.model_call(x)


def load_sides(torch_overrides=None, paddle_overrides=None):
    return {"torch": load_side("torch", **(torch_overrides or {})),
            "paddle": load_side("paddle", **(paddle_overrides or {}))}


def bind_mapping(sides, mapping):
    """Sides whose weights move through the mapping (where not replaced); see bind_side."""
    return {name: bind_side(name, side, mapping) for name, side in sides.items()}


def bind_side(name, side, mapping):
    """A copy of the side with what the checks need, in canonical names and layout:

    export_weights(model, names=None)   the state (all, or the canonical names given)
    import_weights(model, weights)      the whole state (every mapped tensor, or ValueError)
    import_some(model, weights)         part of it, tensor by tensor (no copy of a big model)
    gradients(model, names=None)        gradients of the trainable tensors (all, or those named)
    trainable(model)                    canonical names of the tensors the optimizer updates
    module_names                        {torch module: this side's module}
    A paddle tensor made of several torch tensors (slices) is written whole: the canonical tensors
    not given are read from the model first.
    """
    by_torch = {t.torch: t for t in mapping.tensors}
    inspect = side.inspect

    def pairs_of(names):
        return list(by_torch.values()) if names is None else [by_torch[c] for c in names]

    def native(pairs):
        return list(dict.fromkeys(p.torch if name == "torch" else n for p in pairs for n in
                                  ((p.torch,) if name == "torch" else p.paddle_parts)))

    def export(model, names=None):
        pairs = pairs_of(names)
        return to_canonical(name, inspect.state_arrays(model, native(pairs)), mapping, pairs)

    def import_all(model, weights):
        shapes = None if name == "torch" else inspect.state_shapes(model)
        inspect.load_state_arrays(model, from_canonical(name, weights, mapping, shapes))

    def import_some(model, weights):
        if name == "torch":
            inspect.load_state_arrays(model, {c: np.asarray(v) for c, v in weights.items()})
            return
        pairs = pairs_of(list(weights))
        written = set(native(pairs))
        writers = [t for t in by_torch.values() if not written.isdisjoint(t.paddle_parts)]
        missing = [t.torch for t in writers if t.torch not in weights]
        weights = {**weights, **(export(model, missing) if missing else {})}
        inspect.load_state_arrays(model, transforms.to_paddle(writers, weights, inspect.state_shapes(model)))

    def gradients(model, names=None):
        pairs = pairs_of(names)
        found = inspect.gradients(model, None if names is None else native(pairs))
        return {p.torch: to_canonical(name, found, mapping, [p])[p.torch] for p in pairs
                if all(n in found for n in native([p]))}

    def trainable(model):
        names = set(inspect.trainable_names(model))
        return [c for c, p in by_torch.items() if all(n in names for n in native([p]))]

    return replace(side, export_weights=side.export_weights or export, import_weights=side.import_weights or import_all,
                   import_some=import_some, gradients=gradients, trainable=trainable,
                   module_names={m.torch: (m.torch if name == "torch" else m.paddle) for m in mapping.modules})


# ---------------------------------------------------------------------------------------------
# Inputs: batches, dropout masks, start weights


def make_batches(task, config, batch_size, n):
    """n batches of (float32 inputs, int64 labels): seeded random, or real data."""
    if config.dataset:
        from dualbench.common.data.sources import load_dataset
        from dualbench.common.data.split import prepare_splits
        splits = prepare_splits(load_dataset(config.dataset, config.data_path, progress=False), task)
        need = n * batch_size
        if len(splits.train_y) < need:
            raise UserError(f"dataset '{config.dataset}' has {len(splits.train_y)} training samples; "
                            f"parity needs {need} (--steps x --batch-size)")
        order = np.random.default_rng([config.seed, 5]).permutation(len(splits.train_y))[:need]
        x, y = splits.train_x[order], splits.train_y[order].astype(np.int64)
        return [(x[i * batch_size:(i + 1) * batch_size], y[i * batch_size:(i + 1) * batch_size]) for i in range(n)]
    rng = np.random.default_rng([config.seed, 1234])
    mean, std = task.data.normalize
    batches = []
    for _ in range(n):
        pixels = rng.random((batch_size, *task.model.input_shape)) ** 3   # mostly dark, like images
        batches.append((((pixels - mean) / std).astype(np.float32),
                        rng.integers(0, task.num_classes, batch_size).astype(np.int64)))
    return batches


BATCH_FLOP_BUDGET = 2e8     # forward FLOPs of one float32 parity batch
FLOAT32_STEP_BUDGET = 1e10  # float32 forward FLOPs over the default steps (food11-cnn: 2 steps)
FLOAT64_FLOP_BUDGET = 1e8   # ... of one float64 batch (float64 convolutions are several times slower)
FLOAT64_STEP_BUDGET = 4e9   # float64 forward FLOPs over all repeated steps (food11: 1 step)


def forward_flops(spec):
    """Multiply-adds x 2 of one sample's forward pass (conv and linear layers)."""
    return 2 * forward_macs(spec)


def parity_sizes(task, config):
    """(batch, steps, float64 batch, float64 steps): the task's batch, capped for a fast --all.

    An explicit config.steps / config.batch_size is always honoured for float32.
    """
    per_sample = max(forward_flops(task.model), 1)
    batch = config.batch_size or max(2, min(task.protocol.batch_size, 32, int(BATCH_FLOP_BUDGET // per_sample)))
    steps = config.steps or max(2, min(DEFAULT_STEPS, int(FLOAT32_STEP_BUDGET // (per_sample * batch))))
    batch64 = max(1, min(config.float64_batch or batch, batch, int(FLOAT64_FLOP_BUDGET // per_sample)))
    steps64 = max(1, min(steps, int(FLOAT64_STEP_BUDGET // (per_sample * batch64))))
    return batch, steps, batch64, steps64


def mask_maker(seed, holder):
    """mask_for(key, shape, p, channelwise) for inject_dropout_masks: the same 0/1 mask on both sides."""
    def mask_for(key, shape, p, channelwise):
        rng = np.random.default_rng([seed, holder["step"], zlib.crc32(key.encode())])
        mask_shape = tuple(shape[:2]) + (1,) * (len(shape) - 2) if channelwise else tuple(shape)
        return (rng.random(mask_shape) >= p).astype(np.float64)
    return mask_for


def randomise_bn(modules, weights, seed):
    """Give BatchNorm non-trivial gamma/beta/running stats so that their mapping is exercised.
    modules: the mapping's ModulePairs."""
    rng = np.random.default_rng([seed, 99])
    out = {k: v.copy() for k, v in weights.items()}
    for m in modules:
        if m.kind not in BATCHNORM_KINDS:
            continue
        for t in m.tensors:
            field_name = t.torch.rsplit(".", 1)[-1]
            low_high = {"weight": (0.5, 1.5), "running_var": (0.5, 1.5)}.get(field_name)
            out[t.torch] = (rng.uniform(*low_high, t.shape) if low_high else
                            rng.normal(0, 0.1, t.shape)).astype(np.float32)
    return out


def random_weights(mapping, seed):
    """Canonical random weights for a model pair (--weights random): He-normal weights, small random
    biases and BatchNorm statistics, so that no layer's output is near zero or constant."""
    rng = np.random.default_rng([seed, 4242])
    out = {}
    for m in mapping.modules:
        for t in m.tensors:
            shape = t.shape
            if len(shape) >= 2:
                fan_in = int(np.prod(shape[1:])) if m.kind != "linear" else shape[1]
                if m.kind.startswith("convtranspose"):
                    fan_in = int(shape[0] * np.prod(shape[2:]))
                if m.kind == "embedding":
                    fan_in = 1
                out[t.torch] = rng.normal(0.0, np.sqrt(2.0 / max(fan_in, 1)), shape)
            else:
                out[t.torch] = rng.normal(0.0, 0.1, shape)
    return {k: np.asarray(v, np.float32) for k, v in randomise_bn(mapping.modules, out, seed).items()}


# ---------------------------------------------------------------------------------------------
# Tasks


def with_optimizer(task, name):
    if not name:
        return task
    opt = task.protocol.optimizer
    new = Optimizer(name, opt.lr, momentum=0.9 if name == "momentum" else 0.0, weight_decay=opt.weight_decay)
    return replace(task, protocol=replace(task.protocol, optimizer=new))


def task_pair(task, sides, config):
    """A task's two models, built from its spec; the mapping follows from the spec's layer names."""
    from dualbench.parity.match import match_by_name
    task = with_optimizer(task, config.optimizer)
    batch_size, steps, batch64, steps64 = parity_sizes(task, config)
    if config.batches is not None:
        batches = [(np.asarray(x, np.float32), np.asarray(y, np.int64)) for x, y in config.batches]
        batch64, steps64 = min(batch64, len(batches[0][1])), min(steps64, len(batches))
    else:
        batches = make_batches(task, config, batch_size, steps)
    prototypes = {name: side.build_model(task.model) for name, side in sides.items()}
    tables = {name: side.inspect.module_table(prototypes[name]) for name, side in sides.items()}
    mapping = match_by_name(tables["torch"], tables["paddle"], [layer.name for layer in task.model.layers])
    if config.start_weights is not None:
        start = {k: np.asarray(v, np.float32) for k, v in config.start_weights.items()}
    else:
        start = randomise_bn(mapping.modules, shared_weights(task.model, config.seed), config.seed)
    return Pair(task.name, task, task.model, mapping, batches, start, batch64, steps64, config.float64, "task",
                tables, prototypes)


# ---------------------------------------------------------------------------------------------
# Model pairs


def pair_task(name, loss, optimizer, lr, batch_size):
    """The plain protocol a model pair is trained with: one loss, one optimizer, nothing else."""
    opt = Optimizer(optimizer, lr, momentum=0.9 if optimizer == "momentum" else 0.0)
    return Task(name, name, "", None, loss, Protocol(opt, batch_size=batch_size, epochs=1),
                DataSpec("(model pair inputs)", (0.0, 1.0)))


def model_pair(factories, sides, config, inputs, *, loss=None, classes=None, labels=None, mapping_file=None,
               mapping=None, name="model pair", info=None):
    """A pair of user models: factories {side: zero-argument builder}; inputs: one numpy batch, a list of
    positional arrays, or {key: array} bound to forward()'s parameters (inputs.bind_pair), used at every
    step.

    The modules are matched by running both models on the inputs (match.match_models; square weights the
    shapes cannot orient are settled by replaying both), or read from mapping_file (or taken as given: a
    Mapping). Raises UserError for an unknown loss or labels that do not fit.
    """
    import time
    clock = time.perf_counter()
    models = {side: factories[side]() for side in ("torch", "paddle")}
    timings = {"building": time.perf_counter() - clock}
    clock = time.perf_counter()
    if isinstance(inputs, dict) and "args" not in inputs:
        inputs = bind_pair(inputs, models, input_renames(mapping_file), mapping_file or "the inputs")
    notes, functional_dropout = prepare_models(models, sides)
    tables = {side: sides[side].inspect.module_table(models[side]) for side in models}
    recorded = record_both(models, sides, tables, inputs)
    mapping = mapping or pair_mapping(models, sides, tables, recorded, mapping_file, info)
    mapping.info.update(info or {})
    one_sided = show_one_sided(mapping, models, sides, config.seed)
    notes += one_sided.pop("notes")
    timings["matching"] = time.perf_counter() - clock
    leaves = recorded["torch"][1]
    if config.output_leaf >= max(len(leaves), 1):
        raise UserError(f"--output {config.output_leaf}: the torch model returns {len(leaves)} tensor(s)")
    output = leaves[config.output_leaf][1] if leaves else None
    loss = loss or default_loss(output)
    classes = check_loss(loss, output, classes)
    steps = config.steps or DEFAULT_PAIR_STEPS
    labels = make_labels(loss, output, classes, steps, config.seed) if labels is None else [np.asarray(labels)] * steps
    optimizer = config.optimizer or "sgd"
    task = replace(pair_task(name, loss, optimizer, config.lr or DEFAULT_LR[optimizer], len(labels[0])),
                   output_leaf=config.output_leaf)
    if config.weights == "random":
        start = random_weights(mapping, config.seed)
    else:
        start = to_canonical(config.weights, sides[config.weights].inspect.state_arrays(models[config.weights]),
                             mapping) if not mapping.blocking()[0] and not mapping.blocking()[1] else {}
    # the float64 repeat takes the first 8 samples where every input array has the batch first; all of them
    # where one does not (a [T, T] mask, h0 [layers, batch, hidden])
    n = batch_size(inputs)
    batch64 = min(n, 8) if rows_sliceable(inputs, labels[0]) else len(labels[0])
    return Pair(name, task, None, mapping, [(inputs, y) for y in labels], start, batch64=batch64, steps64=steps,
                float64=config.float64, origin="models", tables=tables, prototypes=models, timings=timings,
                notes=notes, one_sided=one_sided, functional_dropout=functional_dropout)


def record_both(models, sides, tables, inputs):
    """Both models run once on the inputs (eval), every module of their tables recorded: {side: (calls,
    output leaves, error)}; a model that cannot run the inputs is a one-line UserError."""
    recorded = {side: sides[side].inspect.record_calls(models[side], for_side(inputs, side), False, list(tables[side]))
                for side in models}
    for side, (_, _, error) in recorded.items():
        if error:
            raise UserError(f"the {side} model cannot run the input ({describe_inputs(inputs)}): {error}")
    return recorded


def matched_mapping(models, sides, tables, recorded, info):
    """The mapping matched from the recorded calls (record_both), square weights' orientation replayed."""
    from dualbench.parity.match import describe_calls, match_models, settle_by_replay
    calls = {side: describe_calls(side, tables[side], recorded[side][0]) for side in models}
    mapping = match_models(tables["torch"], tables["paddle"], calls["torch"], calls["paddle"], info)
    settle_by_replay(mapping, models, sides, {side: recorded[side][0] for side in models})
    return mapping


def pair_mapping(models, sides, tables, recorded, mapping_file, info):
    """The mapping from the file, or matched from the recorded calls (ambiguous orientations replayed)."""
    from dualbench.parity.mapping import read_mapping
    if mapping_file and mapping_has_modules(mapping_file):
        states = {side: sides[side].inspect.state_shapes(models[side]) for side in models}
        return read_mapping(mapping_file, tables["torch"], tables["paddle"], states["torch"], states["paddle"])
    return matched_mapping(models, sides, tables, recorded, info)


def show_one_sided(mapping, models, sides, seed):
    """Tensors of a matched layer that only one side has (paddle's InstanceNorm2D scale and bias, which torch's
    InstanceNorm2d(affine=False) lacks) start at values that change the output (scale 1, bias 0 would hide
    them until training moves them); the other side's layer has nothing to match them. Returns {torch module:
    {torch local name: paddle's values}} for the replays, and the notes under "notes"."""
    rng = np.random.default_rng([seed, 31])
    notes, found = [], {}
    for m in mapping.modules:
        for side, names in m.one_sided.items():
            shapes = sides[side].inspect.state_shapes(models[side])
            values = {n: (rng.uniform(0.5, 1.5, shapes[n]) if n.endswith(("weight", "scale", "running_var")) else
                          rng.normal(0.0, 0.5, shapes[n])).astype(np.float32) for n in names}
            sides[side].inspect.load_state_arrays(models[side], values)
            prefix = (f"{m.paddle}." if m.paddle else "") if side == "paddle" else (f"{m.torch}." if m.torch else "")
            # under torch's local names, as the replays read them (paddle's InstanceNorm `scale` is `weight`)
            torch_local = {} if side == "torch" else {rule[0]: name for name, rule in TENSOR_RULES.get(m.kind, {}).items()
                                                      if isinstance(rule[0], str)}
            found.setdefault(m.torch, {}).update({torch_local.get(n[len(prefix):], n[len(prefix):]): v
                                                  for n, v in values.items()})
            notes.append(f"{side}'s {m.types[0 if side == 'torch' else 1]} {m.torch if side == 'torch' else m.paddle} "
                         f"holds {', '.join(n.rsplit('.', 1)[-1] for n in names)}, which the other side's layer "
                         "does not have: given values away from 1 and 0 for the check, so that what they do shows")
    return {**found, "notes": notes}


def mapping_has_modules(path):
    """A mapping file may hold only "inputs" (renames per side): the modules are then matched as usual."""
    import json
    try:
        return "modules" in json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return True      # read_mapping says what is wrong with it


def prepare_models(models, sides):
    """Functional dropout off on both sides (the checks cannot give it the other side's mask); (the notes the
    report shows about what the check changed, ["side module (p=...)"] for the rows' dropout column)."""
    notes, changed_all = [], []
    for side in ("torch", "paddle"):
        changed, _ = sides[side].inspect.functional_dropout_off(models[side])
        changed_all += [f"{side} {n or '(model)'} (p={p:g})" for n, p in changed]
        if changed:
            where = ", ".join(f"{n or '(model)'} (p={p:g})" for n, p in changed)
            notes.append(f"{side}: dropout inside {where} "
                         "runs inside the module's own computation and cannot get the other side's mask: set to 0 "
                         "for the check (dropout modules keep theirs, with shared masks)")
    composites = [n for n, info in sides["torch"].inspect.module_table(models["torch"]).items() if info.get("composite")
                  or info["type"] == "MultiheadAttention"]
    if composites:
        notes.append("torch's eval fast path for MultiheadAttention and the Transformer layers (one fused call that "
                     "skips the submodules) is switched off for the check, so that every submodule is compared")
    return notes, changed_all


def load_pair_factories(args):
    """{side: factory}, label, sides with build_model set (one-line errors for bad SPECs)."""
    from dualbench.model_loader import model_factory
    if not (args.torch and args.paddle):
        raise UserError("a model pair needs both --torch SPEC and --paddle SPEC")
    factories, specs = {}, {}
    for side in ("torch", "paddle"):
        factories[side], specs[side] = model_factory(getattr(args, side), side, seed=args.seed)
    sides = load_sides()
    for side in sides:
        sides[side].build_model = (lambda f: lambda spec: f())(factories[side])
    t, p = specs["torch"].label, specs["paddle"].label
    return factories, (t if t == p else f"{t} vs {p}"), sides


def structure_error(mapping, where=None):
    """A one-line UserError when tensors stayed unmatched (the weights cannot move across), or None."""
    torch_left, paddle_left = mapping.blocking()
    if not torch_left and not paddle_left:
        return None
    count = {side: sum(len(u["tensors"]) for u in left) for side, left in (("torch", torch_left), ("paddle", paddle_left))}
    first = (torch_left or paddle_left)[0]
    side = "torch" if torch_left else "paddle"
    name, shape = next(iter(first["tensors"].items()))
    fix = (f"see {where}: pair the modules by hand there and pass --mapping {where}" if where else
           "pass a mapping (write one with `dualbench parity --torch ... --paddle ...`)")
    return UserError(f"the models differ in structure: {count['torch']} torch and {count['paddle']} paddle tensors "
                     f"have no counterpart (first: {side} {first['module'] or '(model)'} {first['type']} {name} "
                     f"{list(shape)}); {fix}")
