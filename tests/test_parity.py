"""`dualbench parity`: clean ports pass, and each known convention difference, introduced on purpose
into one side, is caught at the right place with the right cause named."""
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from dualbench.common.tasks import (DataSpec, ModelSpec, Optimizer, Protocol, Task, act, bn2d, conv, dropout, dropout2d,
                          flatten, linear, maxpool)
from tests.conftest import run_cli, run_main

pytest.importorskip("torch")
pytest.importorskip("paddle")

from dualbench import parity  # noqa: E402

DATA = DataSpec("synthetic-mnist", (0.0, 1.0))


def small_task(name, layers, shape, loss="ce", optimizer=Optimizer("sgd", 0.05), **protocol):
    return Task(name, name, "test", ModelSpec(name, tuple(layers), shape), loss,
                Protocol(optimizer, batch_size=16, epochs=1, **protocol), DATA)


# fc1 is not square (a missing transpose raises), fc2 is square (a missing transpose does not)
MLP_LAYERS = [flatten(), linear("fc1", 16, 8), act("relu", "relu1"), dropout("drop1", 0.3),
              linear("fc2", 8, 8), act("tanh", "tanh2"), linear("fc3", 8, 3)]
MLP = small_task("t-mlp", MLP_LAYERS, (1, 4, 4))
MLP_ADAM = small_task("t-mlp-adam", MLP_LAYERS, (1, 4, 4), optimizer=Optimizer("adam", 1e-3))
BN_CNN = small_task("t-bn", [conv("conv1", 1, 4, 3, pad=1), bn2d("bn1", 4), act("relu", "relu1"),
                             dropout2d("drop1", 0.3), maxpool("pool1"), flatten(), linear("fc", 64, 3)],
                    (1, 8, 8), optimizer=Optimizer("momentum", 0.05, momentum=0.9))
# 7x7 -> pool 2 -> 3 (floor) or 4 (ceil)
POOL = small_task("t-pool", [conv("conv1", 1, 2, 3, pad=1), act("relu", "relu1"), maxpool("pool1"),
                             flatten(), linear("fc", 18, 3)], (1, 7, 7))
FAST = parity.ParityConfig(steps=3)


@pytest.fixture(scope="module")
def sides():
    return parity.load_sides()


def paddle_side(**overrides):
    return parity.load_side("paddle", **overrides)


def torch_side(**overrides):
    return parity.load_side("torch", **overrides)


def failures(rows):
    return [r for r in rows if r["status"] in ("FAIL", "error")]


def first_failure(rows):
    bad = failures(rows)
    assert bad, "the injected difference was not detected"
    return bad[0]


def test_compare_uses_max_not_mean():
    ref = np.zeros(1000, np.float32)
    other = ref.copy()
    other[7] = 1e-3          # one outlier: a mean-based check would see 1e-6
    c = parity.rules.compare(ref + 1, other + 1, atol=1e-5, rtol=0)
    assert c["max_abs"] == pytest.approx(1e-3, rel=1e-3) and not c["within"] and c["worst_index"] == "7"
    assert not parity.rules.compare(np.zeros((2, 3)), np.zeros((3, 2)), 1, 1)["within"]


# ---------------------------------------------------------------------------------------------
# Clean ports pass


def test_clean_mlp_with_dropout_passes_every_check(sides):
    rows = parity.check_task(MLP, sides, FAST)
    assert failures(rows) == []
    checks = {(r["check"], r["mode"]) for r in rows}
    assert {("weights", "torch>paddle>torch"), ("weights", "paddle>torch>paddle"), ("forward", "eval"),
            ("forward", "train"), ("loss", "float32"), ("grad", "float32"), ("train", "float32"),
            ("train", "float64")} <= checks
    # the round trip is bit-exact and every layer of the spec is reported in both modes
    assert all(r["max_abs"] == 0 for r in rows if r["check"] == "weights")
    for mode in ("eval", "train"):
        assert [r["name"] for r in rows if r["check"] == "forward" and r["mode"] == mode] == \
            [layer.name for layer in MLP.model.layers]
    # with the injected masks the dropout layer agrees in train mode (frameworks' own masks would not)
    drop = next(r for r in rows if r["check"] == "forward" and r["mode"] == "train" and r["name"] == "drop1")
    assert drop["max_abs"] < 1e-6
    assert {r["step"] for r in rows if r["check"] == "train" and r["name"] == "loss" and r["mode"] == "float32"} == {1, 2, 3}


def test_bn_cnn_passes_and_names_the_expected_running_variance_difference(sides, tmp_path):
    rows = parity.check_task(BN_CNN, sides, parity.ParityConfig(steps=4, batch_size=4))
    assert failures(rows) == []
    var_rows = [r for r in rows if r["name"] == "bn1.running_var" and r["check"] == "train"]
    assert var_rows and all("biased vs unbiased" in r["cause"] for r in var_rows)
    assert any(r["status"] == "expected" for r in var_rows)   # n = 4*8*8: 1/(n-1) is above tolerance
    mean_rows = [r for r in rows if r["name"] == "bn1.running_mean" and r["check"] == "train"]
    assert all(r["status"] == "ok" for r in mean_rows)
    frame, summary, _ = parity.write_outputs(rows, tmp_path)
    assert summary.result.tolist() == ["pass"] and "biased vs unbiased" in summary.expected_differences.iloc[0]
    text = (tmp_path / "parity.md").read_text()
    assert "## Expected differences" in text and "bn1.running_var step" in text


# ---------------------------------------------------------------------------------------------
# Each known convention difference, introduced into one side, is named


def test_transposed_square_linear_weight_is_caught_at_its_layer(sides):
    from dualbench.backends.paddle.weights import import_weights

    def import_with_fc2_transposed(model, weights):
        weights = dict(weights, **{"fc2.weight": np.ascontiguousarray(weights["fc2.weight"].T)})
        import_weights(model, weights)

    rows = parity.check_task(MLP, {"torch": sides["torch"], "paddle": paddle_side(
        import_weights=import_with_fc2_transposed)}, FAST)
    first = first_failure(rows)
    assert first["name"] == "fc2.weight" and "Linear weight orientation" in first["cause"]
    forward = next(r for r in failures(rows) if r["check"] == "forward")
    assert forward["name"] == "fc2" and "Linear weight orientation" in forward["cause"]


def test_missing_linear_transpose_is_named_from_the_shape_error(sides):
    def import_without_transpose(model, weights):
        state = model.state_dict()
        for name, value in weights.items():
            state[name].set_value(np.ascontiguousarray(value))

    rows = parity.check_task(MLP, {"torch": sides["torch"], "paddle": paddle_side(
        import_weights=import_without_transpose)}, FAST)
    assert "Linear weight orientation" in first_failure(rows)["cause"]


def test_uncopied_weights_name_framework_default_initialisation(sides):
    rows = parity.check_task(MLP, {"torch": sides["torch"], "paddle": paddle_side(
        import_weights=lambda model, weights: None)}, FAST)
    first = first_failure(rows)
    assert first["check"] == "weights" and "framework-default initialisation" in first["cause"]
    summary = parity.summarise(rows)
    assert summary.result.iloc[0] == "FAIL" and "framework-default initialisation" in summary.cause.iloc[0]


def test_reversed_bn_momentum_is_named(sides):
    import paddle

    from dualbench.backends.paddle.models import build_model

    def build_with_torch_momentum(spec):   # a port that copies torch's 0.1 into paddle's momentum
        model = build_model(spec)
        for layer in model.sublayers():
            if isinstance(layer, paddle.nn.BatchNorm2D):
                layer._momentum = 0.1
        return model

    rows = parity.check_task(BN_CNN, {"torch": sides["torch"], "paddle": paddle_side(
        build_model=build_with_torch_momentum)}, parity.ParityConfig(steps=3, batch_size=4))
    first = first_failure(rows)
    assert first["check"] == "train" and first["name"].startswith("bn1.running")
    assert "BatchNorm momentum convention" in first["cause"]
    assert all(r["check"] != "forward" for r in failures(rows))   # train-mode outputs still agree


def test_running_variance_corrected_the_wrong_way_fails_with_a_bn_cause(sides):
    """One backend's running variance updated the other way: (n-1)/n instead of n/(n-1) correction."""
    import paddle

    from dualbench.backends.paddle.train import train_step

    def train_step_with_shrunk_variance(state, x, y):
        out = train_step(state, x, y)
        for layer in state.model.sublayers():
            if isinstance(layer, paddle.nn.BatchNorm2D):
                n = x.shape[0] * x.shape[2] * x.shape[3]   # pool-free first layer: input H x W
                batch = layer._variance * 1.0
                layer._variance.set_value(batch * (1 - 0.1 / (n - 1)))
        return out

    rows = parity.check_task(BN_CNN, {"torch": sides["torch"], "paddle": paddle_side(
        train_step=train_step_with_shrunk_variance)}, parity.ParityConfig(steps=3, batch_size=4))
    first = first_failure(rows)
    assert first["check"] == "train" and first["name"] == "bn1.running_var" and first["step"] == 1
    assert "BatchNorm" in first["cause"] and first["status"] == "FAIL"


@pytest.mark.parametrize("task_wd", [0.0, 0.01])
def test_adamw_on_one_side_names_decoupled_weight_decay(sides, task_wd):
    import paddle

    from dualbench.backends.paddle.train import make_state

    task = replace(MLP_ADAM, protocol=replace(MLP_ADAM.protocol, optimizer=Optimizer("adam", 1e-3, weight_decay=task_wd)))

    def make_state_adamw(task, model):
        state = make_state(task, model, "cpu")
        params = [p for p in model.parameters() if not p.stop_gradient]
        kwargs = {"weight_decay": task_wd} if task_wd else {}   # no value given: AdamW's default 0.01
        state.optimizer = paddle.optimizer.AdamW(learning_rate=task.protocol.optimizer.lr, parameters=params, **kwargs)
        return state

    rows = parity.check_task(task, {"torch": sides["torch"], "paddle": paddle_side(make_state=make_state_adamw)},
                             FAST)
    first = first_failure(rows)
    assert first["check"] == "train"
    # exactly that cause, proven by replaying the update, and no other
    expected = "AdamW's default decoupled decay" if not task_wd else "weight decay coupled vs decoupled"
    assert expected in first["cause"] and " Or: " not in first["cause"], first["cause"]


def test_clip_grad_by_global_norm_names_the_clipping_epsilon(sides):
    import paddle

    from dualbench.backends.paddle.train import make_state

    task = small_task("t-clip", [flatten(), linear("fc", 16, 2)], (1, 4, 4), optimizer=Optimizer("sgd", 0.5),
                      grad_clip=1e-5)
    # confident, correct predictions: gradient norm ~1e-4, where the 1e-6 epsilon matters
    start = {"fc.weight": np.zeros((2, 16), np.float32), "fc.bias": np.array([5.0, -5.0], np.float32)}
    rng = np.random.default_rng(0)
    batches = [(rng.random((8, 1, 4, 4)).astype(np.float32) * 0.01, np.zeros(8, np.int64)) for _ in range(3)]

    def make_state_clip_by_global_norm(task, model):
        unclipped = replace(task, protocol=replace(task.protocol, grad_clip=None))  # no clip_grad_norm_ call
        state = make_state(unclipped, model, "cpu")
        params = [p for p in model.parameters() if not p.stop_gradient]
        state.optimizer = paddle.optimizer.SGD(learning_rate=task.protocol.optimizer.lr, parameters=params,
                                               grad_clip=paddle.nn.ClipGradByGlobalNorm(task.protocol.grad_clip))
        return state

    config = parity.ParityConfig(start_weights=start, batches=batches)
    assert failures(parity.check_task(task, sides, config)) == []
    rows = parity.check_task(task, {"torch": sides["torch"], "paddle": paddle_side(
        make_state=make_state_clip_by_global_norm)}, config)
    first = first_failure(rows)
    assert first["check"] == "train" and first["step"] == 1
    assert "gradient-clipping epsilon" in first["cause"] and "ClipGradByGlobalNorm" in first["cause"]


def test_ce_label_of_shape_n1_is_named(sides):
    import torch
    rows = parity.check_task(MLP, {"torch": torch_side(to_labels=lambda y: torch.from_numpy(y.reshape(-1, 1))),
                                   "paddle": sides["paddle"]}, FAST)
    first = first_failure(rows)
    assert first["check"] == "loss" and "cross-entropy label shape/dtype" in first["cause"]


def test_float_label_in_torch_ce_is_named(sides):
    import torch
    rows = parity.check_task(MLP, {"torch": torch_side(to_labels=lambda y: torch.from_numpy(y.astype(np.float32))),
                                   "paddle": sides["paddle"]}, FAST)
    assert "cross-entropy label shape/dtype" in first_failure(rows)["cause"]


def test_n1_label_broadcasting_in_mse_is_named(sides):
    import paddle
    task = replace(MLP, name="t-mlp-mse", loss="mse_value",
                   model=replace(MLP.model, layers=MLP.model.layers[:-1] + (linear("fc3", 8, 1),)))
    rows = parity.check_task(task, {"torch": sides["torch"], "paddle": paddle_side(
        to_labels=lambda y: paddle.to_tensor(y.reshape(-1, 1)))}, FAST)
    first = first_failure(rows)
    assert first["check"] == "loss" and "label shape" in first["cause"] and "[N,N]" in first["cause"]


def test_ceil_mode_pooling_is_caught_at_the_pool(sides):
    import paddle

    from dualbench.backends.paddle.models import build_model

    def build_with_ceil_mode(spec):
        model = build_model(spec)
        for layer in model.sublayers():
            if isinstance(layer, paddle.nn.MaxPool2D):
                layer.ceil_mode = True
        return model

    assert failures(parity.check_task(POOL, sides, FAST)) == []
    rows = parity.check_task(POOL, {"torch": sides["torch"], "paddle": paddle_side(
        build_model=build_with_ceil_mode)}, FAST)
    first = first_failure(rows)
    assert first["check"] == "forward" and first["name"] == "pool1"
    assert "pooling ceil_mode" in first["cause"]


def test_rules_alone_recognise_bn_conventions():
    rng = np.random.default_rng(0)
    means, variances = [rng.normal(size=3) for _ in range(4)], [rng.uniform(0.5, 2, 3) for _ in range(4)]
    n = 50
    fit = {}
    for convention in parity.rules.BN_CONVENTIONS:
        m, v = parity.rules.simulate_bn(np.zeros(3), np.ones(3), means, variances, n, *convention)
        fit[convention] = parity.rules.bn_convention(np.zeros(3), np.ones(3), means, variances, n, m, v)[0]
        assert fit[convention] == (convention[0], convention)
    cause, expected = parity.rules.bn_stats_cause(fit[(0.1, True)], fit[(0.1, False)], n)
    assert expected and "biased vs unbiased" in cause
    cause, expected = parity.rules.bn_stats_cause(fit[(0.1, False)], fit[(0.1, True)], n)   # the other way round
    assert not expected and "biased vs unbiased" in cause
    cause, expected = parity.rules.bn_stats_cause(fit[(0.1, True)], fit[(0.9, False)], n)
    assert not expected and "momentum convention" in cause
    # a variance "corrected" the wrong way, (n-1)/n instead of n/(n-1), fits no convention
    m, v = parity.rules.simulate_bn(np.zeros(3), np.ones(3), means, [x * (n - 1) / n for x in variances], n, 0.1, False)
    wrong = parity.rules.bn_convention(np.zeros(3), np.ones(3), means, variances, n, m, v)[0]
    assert wrong[1] is None
    cause, expected = parity.rules.bn_stats_cause(fit[(0.1, True)], wrong, n)
    assert not expected and "none of the known conventions" in cause


# ---------------------------------------------------------------------------------------------
# CLI: outputs and exit codes


def test_cli_writes_csv_and_markdown_and_exits_0(tmp_path):
    out = tmp_path / "p"
    proc = run_main("parity", "--task", "mnist-mlp-sigmoid-mse", "--steps", "3", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "mnist-mlp-sigmoid-mse: pass" in proc.stdout
    frame = pd.read_csv(out / "parity.csv")
    assert list(frame.columns) == parity.COLUMNS
    fwd = frame[(frame.check == "forward") & (frame["mode"] == "eval")]
    assert list(fwd.name) == ["flatten", "fc1", "sigmoid1", "fc2", "sigmoid2", "fc3"]
    assert fwd.max_abs.notna().all() and (fwd.max_abs < 1e-5).all()
    assert "# dualbench parity" in (out / "parity.md").read_text()


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_exits_1_outside_tolerance(tmp_path):
    proc = run_cli("parity", "--task", "mnist-mlp-sigmoid-mse", "--steps", "2", "--atol", "0", "--rtol", "0",
                   "--no-float64", "--out", tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL" in proc.stdout and (tmp_path / "parity.csv").exists()


@pytest.mark.parametrize("args", [[], ["--task", "no-such-task"], ["--all", "--task", "mnist-mlp"],
                                  ["--task", "mnist-mlp", "--steps", "0"], ["--task", "mnist-mlp", "--rtol", "-1"],
                                  ["--task", "mnist-mlp", "--optimizer", "rmsprop"]])
def test_cli_usage_errors_exit_2(args, tmp_path):
    proc = run_cli("parity", *args, "--out", tmp_path)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_a_crashing_task_is_a_fail_row_and_the_others_are_still_checked(sides, tmp_path, monkeypatch):
    from dualbench.common.tasks import get_task
    real = parity.check_task

    def crash_on_lenet(task, sides_, config):
        if task.name == "mnist-lenet":
            raise RuntimeError("simulated crash inside a framework")
        return real(task, sides_, config)

    monkeypatch.setattr(parity.checks, "check_task", crash_on_lenet)
    tasks = [get_task("mnist-lenet"), get_task("mnist-linear-mse")]
    _, summary = parity.run_parity(tasks, FAST, tmp_path, sides=sides, echo=None)
    summary = summary.set_index("task")
    assert summary.loc["mnist-lenet", "result"] == "FAIL"
    assert "simulated crash" in summary.loc["mnist-lenet", "cause"]
    assert summary.loc["mnist-linear-mse", "result"] == "pass"
    written = pd.read_csv(tmp_path / "parity.csv")
    assert set(written.task) == {"mnist-lenet", "mnist-linear-mse"}


def test_a_backends_own_import_weights_is_checked_against_the_mapping():
    """The built-in tasks' weights move through the generic mapping in the checks; the backends' own
    weights.import_weights (the studies' shared initialisation) is checked against it: one that forgets to
    transpose square Linear weights fails, with the cause named."""
    from dualbench.backends import load
    from dualbench.common.tasks import get_task
    weights = load("paddle", "weights")

    def import_without_square_transposes(model, canonical):
        fixed = {k: (v if v.ndim != 2 or v.shape[0] != v.shape[1] else v.T) for k, v in canonical.items()}
        weights.import_weights(model, fixed)     # the backend transposes every Linear weight: squares end up as is

    task = get_task("mnist-mlp")       # fc2 is 200 x 200
    broken = {"torch": parity.load_side("torch"),
              "paddle": paddle_side(task_import_weights=import_without_square_transposes)}
    rows = parity.check_task(task, broken, parity.ParityConfig(steps=1, float64=False))
    first = first_failure(rows)
    assert first["check"] == "weights" and first["mode"] == "paddle import_weights" and first["name"] == "fc2.weight"
    assert "Linear weight orientation" in first["cause"]
    clean = parity.check_task(task, parity.load_sides(), parity.ParityConfig(steps=1, float64=False))
    assert {r["mode"] for r in clean if r["check"] == "weights"} >= {"torch import_weights", "paddle export_weights"}
    assert failures(clean) == []
