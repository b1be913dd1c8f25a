"""Checks 3 and 4: the loss and every gradient, then K optimizer steps, run on both sides in lockstep.

A *replica* is one framework's model in one dtype, with the start weights, its own optimizer, the
same batches and the same dropout masks. All replicas take each step together and are compared
tensor by tensor as they go, so no full copy of the weights is kept: a 133M-parameter vgg11 would
need half a gigabyte per float32 copy, and steps 1 and K on two sides in two dtypes would need eight.

With float32 and float64 replicas of both frameworks on the same batches, every float32 comparison
has its own float64 reference: how far each side departs from its own float64 result (its float32
rounding error on that tensor), and whether the torch/paddle difference shrinks in float64. A
difference that does not shrink with precision is a formula difference; one that does, and that
each side's own rounding explains, is float32 noise (measured on torchvision's resnet18 at
2x3x224x224: torch's own float32 gradient of layer3.0.conv1 departs 10% from its float64 result,
paddle's 0.3%, and the two agree to 2e-8 in float64).
"""
from dataclasses import dataclass, field

import numpy as np

from dualbench.parity.conventions import layers as conventions
from dualbench.parity.conventions import rules
from dualbench.parity.kinds import BATCHNORM_KINDS, DROPOUT_KINDS
from dualbench.parity.diagnose import bn_weights, explain_bn_rows, mark_bn_bias_noise
from dualbench.parity.inputs import cast_inputs
from dualbench.parity.pair import mask_maker
from dualbench.parity.rows import FAILED, TOLERANCES, describe, error_row, error_text, make_row, tolerance
from dualbench.parity.transfer import paddle_names

RUN_ERRORS = (RuntimeError, ValueError, TypeError, AssertionError, IndexError)
LABEL_LOSSES = ("ce", "mse_value", "mse_onehot")
NOISE_FACTOR = 2.0   # float32: torch vs paddle within twice the sum of each side's own float32 error
SHRINK = 0.1         # ... and in float64 at most a tenth of that error: a formula difference does not shrink
UNRELIABLE = 0.1     # a float32 result this far (of the tensor's scale) from its float64 one: say so


@dataclass
class Replica:
    side: object                  # the bound side (dualbench.parity.pair.bind_mapping)
    dtype: str
    model: object
    start: dict                   # the start weights in this dtype
    state: object = None
    labels: list = None
    label_info: tuple = None
    holder: dict = field(default_factory=lambda: {"step": 0})
    bn: dict = field(default_factory=dict)       # BN module (torch name) -> [(mean, var, n)] per batch
    removers: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    first: dict = None            # loss, objective, output at the start
    error: str = None

    @property
    def name(self):
        return self.side.name


def start_replica(pair, side, dtype, model, batches, seed):
    """Cast the model, import the start weights, build the optimizer, inject the masks, watch BN."""
    if dtype != "float32":
        side.inspect.cast_model(model, dtype)
    rep = Replica(side, dtype, model, pair.start_in(dtype))
    side.import_weights(model, rep.start)
    rep.state = side.make_state(pair.task, model)
    bn_native = {side.module_names[m.torch]: m.torch for m in pair.mapping.modules if m.kind in BATCHNORM_KINDS}
    rep.bn = {name: [] for name in bn_native.values()}

    def record_bn(name, inputs, *_outputs_kwargs_layout):
        x = inputs[0].astype(np.float64)
        axes = tuple(i for i in range(x.ndim) if i != 1)
        rep.bn[bn_native[name]].append((x.mean(axis=axes), x.var(axis=axes), x.size // x.shape[1]))

    keys = {side.module_names[m.torch]: m.torch for m in pair.mapping.modules if m.kind in DROPOUT_KINDS}
    rep.removers = [side.inspect.inject_dropout_masks(model, mask_maker(seed, rep.holder), keys)]
    if bn_native:
        rep.removers.append(side.inspect.watch_modules(model, record_bn, list(bn_native)))
    side.inspect.set_mode(model, True)
    rep.labels = [side.to_labels(cast_inputs(y, dtype) if pair.task.loss == "mse" else y) for _, y in batches]
    label = side.inspect.to_numpy(rep.labels[0])
    rep.label_info = (tuple(label.shape), label.dtype.name)
    return rep


def close(replicas):
    for rep in replicas.values():
        for remove in rep.removers:
            remove()
        rep.removers = []


def first_gradients(rep, batches):
    """Loss and backward on the first batch (the first masks); the gradients stay in the model."""
    try:
        rep.first = rep.side.inspect.loss_and_gradients(rep.state, rep.side.to_inputs(
            cast_inputs(batches[0][0], rep.dtype)), rep.labels[0])
    except RUN_ERRORS as e:
        rep.error = error_text(e)


def restart(rep):
    """Back to the start weights (that forward moved the BN running statistics)."""
    rep.side.import_weights(rep.model, rep.start)
    for values in rep.bn.values():
        values.clear()


def take_step(rep, k, batches):
    if rep.error:
        return
    rep.holder["step"] = k
    try:
        loss, _ = rep.side.train_step(rep.state, rep.side.to_inputs(cast_inputs(batches[k][0], rep.dtype)),
                                      rep.labels[k])
        rep.losses.append(float(loss))
    except RUN_ERRORS as e:
        rep.error = error_text(e)


# ---------------------------------------------------------------------------------------------
# Comparing the replicas, quantity by quantity


def _max_abs(a, b, chunk=1 << 20):
    """max |a - b| in float64, a million elements at a time (a vgg11 fc weight has 100 million)."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape or not a.size:
        return np.inf
    return max(float(np.abs(a[i:i + chunk].astype(np.float64) - b[i:i + chunk]).max())
               for i in range(0, a.size, chunk))


def attribute(row32, row64, values):
    """float32 rounding or a real difference, from the four values of one quantity (torch and
    paddle, float32 and float64). Rows out of tolerance become "noise" when each side's own
    float32 error explains the float32 gap and the gap shrinks in float64."""
    t32, p32, t64, p64 = values
    own_t, own_p = _max_abs(t32, t64), _max_abs(p32, p64)
    d32, d64 = _max_abs(t32, p32), _max_abs(t64, p64)
    noise = own_t + own_p
    scale = float(np.abs(np.asarray(t64, np.float64)).max()) if np.size(t64) else 0.0
    if not np.isfinite(noise) or d64 > SHRINK * noise:
        return
    numbers = (f"torch departs from its own float64 result by {own_t:.1e}, paddle by {own_p:.1e}; "
               f"torch vs paddle {d32:.1e} in float32, {d64:.1e} in float64")
    if row32 is not None and row32["status"] == "FAIL" and d32 <= NOISE_FACTOR * noise:
        words = ("float32 arithmetic is unreliable on this tensor (ill-conditioned: more than a tenth of its "
                 "scale), but the formulas are the same" if max(own_t, own_p) > UNRELIABLE * scale else
                 "float32 rounding, not a formula difference")
        row32.update(status="noise", within=True, cause=f"{words}: {numbers}")
    if row64 is not None and row64["status"] == "FAIL":
        row64.update(status="noise", within=True, cause=f"below float32's own rounding on this tensor: {numbers}")


class Lockstep:
    """The replicas of one phase: {(side, dtype): Replica}, and the rows they give."""

    def __init__(self, pair, sides, config, ctx, replicas, dtypes):
        self.pair, self.sides, self.config, self.ctx = pair, sides, config, ctx
        self.reps, self.dtypes = replicas, dtypes
        self.paddle_names = paddle_names(pair)
        self.rows = {d: {"grad": [], "train": [], "after": []} for d in dtypes}
        # for the training diagnosis, per dtype and compared step: the updates {name: (torch, paddle)}
        # of the parameters whose update failed there
        self.kept = {d: {} for d in dtypes}

    def pairs(self):
        return [(d, self.reps[("torch", d)], self.reps[("paddle", d)]) for d in self.dtypes]

    def compare(self, part, check, name, step, kind, tols, fetch):
        """One quantity in every dtype: rows, and the float64 attribution when both dtypes ran.
        fetch(rep) -> array. Returns {dtype: row}."""
        values, made = {}, {}
        for dtype, t, p in self.pairs():
            a, b = fetch(t), fetch(p)
            values[dtype] = (a, b)
            mode = "float64" if dtype == "float64" else "float32"
            made[dtype] = make_row(self.ctx, check, mode, name, a, b, tols[dtype], step=step, kind=kind,
                                   paddle_name=self.paddle_names.get(name))
            self.rows[dtype][part].append(made[dtype])
        if len(values) == 2:
            attribute(made["float32"], made["float64"], (*values["float32"], *values["float64"]))
        return made, values

    # -----------------------------------------------------------------------------------------

    def loss_and_gradients(self, batches, forward_after):
        for rep in self.reps.values():
            first_gradients(rep, batches)
        reference = self.reps[("torch", self.dtypes[0])]
        trainable = reference.side.trainable(reference.model) if not any(r.error for r in self.reps.values()) else []
        for dtype, t, p in self.pairs():
            self.rows[dtype]["grad"] += self.loss_rows(dtype, t, p, forward_after)
        if len(self.dtypes) == 2 and not any(r.first is None for r in self.reps.values()):
            for row32, row64 in zip(self.rows["float32"]["grad"], self.rows["float64"]["grad"]):
                key = row32["name"]          # loss, objective
                attribute(row32, row64, tuple(self.reps[(side, d)].first[key]
                                              for d in self.dtypes for side in ("torch", "paddle")))
        loss_ok = {d: all(r["status"] not in FAILED for r in self.rows[d]["grad"]) for d in self.dtypes}
        scale = {}
        tols = {d: TOLERANCES["float64"] if d == "float64" else tolerance("grad", self.config) for d in self.dtypes}
        for name in trainable:
            made, values = self.compare("grad", "grad", name, None, self.pair.mapping.kind_of_tensor(name), tols,
                                        lambda rep: rep.side.gradients(rep.model, [name])[name])
            t32 = values[self.dtypes[0]][0]
            scale[name] = float(np.abs(t32).max()) if t32.size else 0.0
            for dtype, row in made.items():
                if row["status"] in FAILED:
                    row["cause"] = (f"follows from {forward_after}" if forward_after else
                                    "backward differs although forward and loss agree" if loss_ok[dtype] else
                                    "follows from the loss difference")
        for dtype in self.dtypes:
            mark_bn_bias_noise(self.pair, self.rows[dtype]["grad"], scale)

    def loss_rows(self, dtype, t, p, forward_after):
        mode = "float64" if dtype == "float64" else "float32"
        tol = TOLERANCES["float64"] if dtype == "float64" else tolerance("loss", self.config)
        labels = {"torch": t.label_info, "paddle": p.label_info}
        if t.first is None or p.first is None:
            message = "; ".join(f"{r.name}: {r.error}" for r in (t, p) if r.first is None)
            cause = rules.label_cause(labels, message) if self.pair.task.loss in LABEL_LOSSES else None
            return [error_row(self.ctx, "loss", mode, "loss", cause or message, tol=tol)]
        rows = [make_row(self.ctx, "loss", mode, "loss", t.first["loss"], p.first["loss"], tol)]
        if self.pair.task.protocol.l1 or self.pair.task.protocol.l2:
            rows.append(make_row(self.ctx, "loss", mode, "objective", t.first["objective"], p.first["objective"], tol))
        output = rules.compare(t.first["output"], p.first["output"], *tol)
        # labels other than [N] int64 are a mistake for [N, C] outputs only ([N, L] for sequences is right)
        label_cause = rules.label_cause(labels) if np.ndim(t.first["output"]) == 2 else None
        for row in rows:
            if row["status"] != "ok":
                if forward_after:
                    row["cause"] = f"follows from {forward_after}"
                elif output["within"]:
                    row["cause"] = label_cause or self.loss_replay(t, p, row, tol) or (
                        "no known convention explains this: same model output, different loss (max_abs "
                        f"{row['max_abs']:.2e}); the loss function or its reduction differs")
                else:
                    row["cause"] = (f"the model's output differs (max_rel {output['max_rel']:.1e}) although every "
                                    "compared module agrees: the difference arises after the last compared module, "
                                    "in code that is not a module or in a module without a counterpart (see the "
                                    "mapping's unmatched modules)")
        return rows

    def loss_replay(self, t, p, row, tol):
        """A cross-entropy convention that, flipped, reproduces paddle's loss from the same outputs."""
        if self.pair.task.loss != "ce" or row["name"] != "loss":
            return None
        labels = t.side.inspect.to_numpy(t.labels[0])
        proven = conventions.replay_cross_entropy(t.first["output"], labels, t.first["loss"], p.first["loss"], tol)
        if not proven:
            return None
        return " Or: ".join(f"{title}: the cross-entropy of the same outputs with {key}={value} reproduces paddle's "
                            f"loss (max_abs {gap:.1e}). torch: {t_default}; paddle: {p_default}."
                            for title, t_default, p_default, key, value, gap in proven)

    # -----------------------------------------------------------------------------------------

    def sync(self, keep):
        """Before a step: every replica takes over the reference's state (torch, in the highest
        precision present), tensor by tensor, so that each step is compared from the same
        parameters. keep: return that state per dtype (the 'before' of the step's updates)."""
        reference = self.reps[("torch", self.dtypes[-1])]
        before = {d: {} for d in self.dtypes} if keep else None
        for name in (t.torch for t in self.pair.mapping.tensors):
            value = reference.side.export_weights(reference.model, [name])[name]
            cast = {d: value.astype(d, copy=False) if np.issubdtype(value.dtype, np.floating) else value
                    for d in self.dtypes}
            for rep in self.reps.values():
                if rep is not reference:
                    rep.side.import_some(rep.model, {name: cast[rep.dtype]})
            if keep:
                for d in self.dtypes:
                    before[d][name] = cast[d]
        for rep in self.reps.values():
            for values in rep.bn.values():
                values.clear()
        return before

    def train(self, batches):
        """K steps. From step 2 on, each step starts from the same parameters on every replica
        (sync): training on small batches with BatchNorm can amplify rounding differences step by
        step (measured: torchvision's mobilenet_v2 at 2x3x64x64, torch and paddle in float64 agree to
        3e-10 after step 1 and part at the 6th digit of the loss by step 3), so comparing free-running
        trajectories would test chaos, not the port. Each step's update, loss and BatchNorm statistics
        are compared; a formula that acts only from step 2 on (momentum dampening, Adam's bias
        correction, a schedule stepped per step) still shows at that step."""
        for rep in self.reps.values():
            restart(rep)
        opt = self.pair.task.protocol.optimizer
        tols = {d: {"loss": TOLERANCES["float64-train"], "param": TOLERANCES["float64-train"],
                    "stat": TOLERANCES["float64-train"]} if d == "float64" else
                {"loss": tolerance("train-loss", self.config),
                 "param": tolerance("train-param-adam" if opt.name == "adam" else "train-param", self.config),
                 "stat": tolerance("train-stat", self.config)} for d in self.dtypes}
        names = [t.torch for t in self.pair.mapping.tensors]
        bn_layers = [m.torch for m in self.pair.mapping.modules if m.kind in BATCHNORM_KINDS]
        before = {d: self.reps[("torch", d)].start for d in self.dtypes}
        for k in range(len(batches)):
            if k > 0:
                if any(r.error for r in self.reps.values()):
                    break
                last = k == len(batches) - 1   # the last step's updates are compared: keep its 'before'
                before = self.sync(keep=last) if last else (self.sync(keep=False) or before)
            for rep in self.reps.values():
                take_step(rep, k, batches)
            step = k + 1
            if any(len(r.losses) < step for r in self.reps.values()):
                break
            self.compare("train", "train", "loss", step, "", {d: tols[d]["loss"] for d in self.dtypes},
                         lambda rep: rep.losses[k])
            if step not in (1, len(batches)):   # steps 1 and K
                continue
            step_rows = {d: [] for d in self.dtypes}
            moved = {}
            for name in names:
                stat = "running_" in name
                kind = self.pair.mapping.kind_of_tensor(name)

                def fetch(rep, name=name, stat=stat):
                    # this step's update, in the replica's dtype: exact for small updates (two
                    # floats within a factor 2 of each other subtract exactly)
                    now = rep.side.export_weights(rep.model, [name])[name]
                    if stat or not np.issubdtype(now.dtype, np.floating):
                        return now
                    return now - before[rep.dtype][name]
                made, values = self.compare("train", "train", name, step, kind,
                                            {d: tols[d]["stat" if stat else "param"] for d in self.dtypes}, fetch)
                for dtype, row in made.items():
                    step_rows[dtype].append(row)
                first = values[self.dtypes[0]][0]
                if not stat:
                    moved[name] = float(np.abs(first).max()) if first.size else 0.0
                for dtype in self.dtypes:
                    if not stat and made[dtype]["status"] in FAILED:
                        self.kept[dtype].setdefault(step, {})[name] = values[dtype]
            for dtype, t, p in self.pairs():
                mark_bn_bias_noise(self.pair, step_rows[dtype], moved)
                for layer in bn_layers:
                    stat_names = [f"{layer}.running_mean", f"{layer}.running_var"]
                    if stat_names[0] not in self.paddle_names:
                        continue
                    stats = {rep.name: rep.side.export_weights(rep.model, stat_names) for rep in (t, p)}
                    last = {name: {layer: rep.bn.get(layer, [])[-1:]} for name, rep in (("torch", t), ("paddle", p))}
                    explain_bn_rows(step_rows[dtype], layer, 1, last["torch"], last["paddle"], stats, before[dtype],
                                    bn_weights(self.pair, layer))
        for dtype, t, p in self.pairs():
            mode = "float64" if dtype == "float64" else "float32"
            for rep in (t, p):
                if rep.error:
                    labels = {"torch": t.label_info, "paddle": p.label_info}
                    cause = rules.label_cause(labels, rep.error) if self.pair.task.loss in LABEL_LOSSES else None
                    self.rows[dtype]["train"].append(error_row(
                        self.ctx, "train", mode, f"{rep.name} step {len(rep.losses) + 1}", cause or rep.error,
                        step=len(rep.losses) + 1))

    # -----------------------------------------------------------------------------------------

    def eval_after_train(self, x, earlier=()):
        """Eval forward after training, with torch's running statistics copied into paddle."""
        from dualbench.parity.forward import compare_calls, compared_values
        from dualbench.parity.diagnose import diagnose_forward
        if any(r.error for r in self.reps.values()):
            return
        opt = self.pair.task.protocol.optimizer.name
        outputs = {}
        for dtype, t, p in self.pairs():
            stats = [n for n in self.paddle_names if "running_" in n]
            if stats:
                trained = p.side.export_weights(p.model)
                trained.update(t.side.export_weights(t.model, stats))
                p.side.import_weights(p.model, trained)
            # the trained parameters differ within the train tolerance, so judge the outputs with it
            tol = (tolerance("forward", self.config)[0], TOLERANCES["float64-train"][1] if dtype == "float64" else
                   tolerance("train-param-adam" if opt == "adam" else "train-param", self.config)[1])
            rows, compared, records = compare_calls(self.pair.mapping, {"torch": t.side, "paddle": p.side},
                                                    {"torch": t.model, "paddle": p.model}, self.ctx,
                                                    cast_inputs(x, dtype), "eval", tol)
            for row in rows:
                row["mode"] = "eval-after-train" + ("-float64" if dtype == "float64" else "")
            self.rows[dtype]["after"] = rows
            outputs[dtype] = ({}, rows, compared, records)
            for row, cp in zip(rows, compared):
                a = records["torch"][0].get(cp.torch_output)
                b = records["paddle"][0].get((cp.paddle, cp.paddle_call))
                if a is not None and b is not None and row["name"] == cp.name:
                    outputs[dtype][0][cp.name] = (row, *compared_values(cp, a, b))
        if len(outputs) == 2:
            for name, (row32, a32, b32) in outputs["float32"][0].items():
                if name in outputs["float64"][0]:
                    row64, a64, b64 = outputs["float64"][0][name]
                    attribute(row32, row64, (a32, b32, a64, b64))
        for dtype, (_, rows, compared, records) in outputs.items():   # after the attribution: the causes
            trained = next((r for r in self.rows[dtype]["train"] if r["status"] in FAILED), None)
            diagnose_forward(self.pair, rows, compared, records, "eval", [],
                             after=f"the training steps ({describe(trained)})" if trained else None, earlier=earlier)


def update_history(pair, side, dtype, batches, seed, names, steps):
    """What an optimizer replay needs, from one side running alone (torch: the reference the replicas
    were synced to): for each step up to `steps`, the parameters before it and the raw gradients
    of the objective (before any clipping) of `names`, the global gradient norm, and the update."""
    model = pair.fresh({side.name: side}, side.name)
    rep = start_replica(pair, side, dtype, model, batches, seed)
    params, grads, norms = [], [], []
    try:
        for k in range(steps):
            rep.holder["step"] = k
            side.inspect.loss_and_gradients(rep.state, side.to_inputs(cast_inputs(batches[k][0], dtype)),
                                            rep.labels[k])
            squares, step_grads = 0.0, {}
            for name in side.trainable(model):
                g = side.gradients(model, [name])[name]
                squares += float((g.astype(np.float64) ** 2).sum())
                if name in names:
                    step_grads[name] = g
            norms.append(float(np.sqrt(squares)))
            grads.append(step_grads)
            params.append(side.export_weights(model, list(names)))
            take_step(rep, k, batches)
            if rep.error:
                return None
        params.append(side.export_weights(model, list(names)))
    finally:
        close({"rep": rep})
    moved = [{n: params[j + 1][n].astype(np.float64) - params[j][n] for n in names} for j in range(steps)]
    return params[:-1], grads, norms, moved


def run_training(pair, sides, config, ctx, batches, dtypes, models, forward_after, earlier=()):
    """Checks 3-4 and the eval forward after training for the dtypes, in lockstep; returns the Lockstep
    (its rows per dtype and part, and what the training diagnosis needs). earlier: the forward checks'
    rows, which the diagnosis after training points to."""
    replicas = {(name, dtype): start_replica(pair, side, dtype, models[(name, dtype)], batches, config.seed)
                for dtype in dtypes for name, side in sides.items()}
    lock = Lockstep(pair, sides, config, ctx, replicas, dtypes)
    try:
        lock.loss_and_gradients(batches, forward_after)
        lock.train(batches)
    finally:
        close(replicas)
    lock.eval_after_train(batches[0][0], earlier)
    return lock
