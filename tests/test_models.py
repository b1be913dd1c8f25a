"""Every task in both backends: output shape, parameter count, and forward agreement with shared weights."""
import numpy as np
import pytest

from dualbench.common.init import shared_weights
from dualbench.common.tasks import TASKS, count_parameters

ALL_TASKS = sorted(TASKS)


@pytest.fixture(scope="module")
def both():
    from dualbench import backends
    missing = [n for n in backends.BACKENDS if not backends.is_installed(n)]
    if missing:
        pytest.skip(f"needs both frameworks ({missing} missing)")
    return backends.load("torch"), backends.load("paddle")


def forward(backend, model, x, train):
    model.train() if train else model.eval()
    if backend.NAME == "torch":
        import torch
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()
    import paddle
    with paddle.no_grad():
        return model(paddle.to_tensor(x)).numpy()


@pytest.mark.parametrize("task_name", ALL_TASKS)
def test_shape_and_parameter_count(backend, task_name):
    task = TASKS[task_name]
    model = backend.models.build_model(task.model)
    x = np.random.default_rng(0).normal(size=(3, *task.model.input_shape)).astype(np.float32)
    out = forward(backend, model, x, train=False)
    assert out.shape == (3, task.model.num_outputs)
    assert backend.models.count_parameters(model) == count_parameters(task.model)


@pytest.mark.parametrize("task_name", ALL_TASKS)
def test_forward_agrees_with_shared_weights(both, task_name):
    task = TASKS[task_name]
    weights = shared_weights(task.model, seed=3)
    x = np.random.default_rng(1).normal(size=(8, *task.model.input_shape)).astype(np.float32)
    has_dropout = any(layer.kind.startswith("dropout") for layer in task.model.layers)
    for train in ([False] if has_dropout else [False, True]):   # dropout masks differ by RNG (see parity)
        outs = []
        for backend in both:
            model = backend.models.build_model(task.model)
            backend.weights.import_weights(model, weights)
            outs.append(forward(backend, model, x, train))
        assert np.max(np.abs(outs[0] - outs[1])) <= 1e-5, (task_name, train)


def test_weights_round_trip_is_bit_exact(both):
    torch_b, paddle_b = both
    spec = TASKS["mnist-lenet"].model
    tm = torch_b.models.build_model(spec)
    first = torch_b.weights.export_weights(tm)
    pm = paddle_b.models.build_model(spec)
    paddle_b.weights.import_weights(pm, first)
    tm2 = torch_b.models.build_model(spec)
    torch_b.weights.import_weights(tm2, paddle_b.weights.export_weights(pm))
    back = torch_b.weights.export_weights(tm2)
    assert set(back) == set(first)
    for name in first:
        assert np.array_equal(first[name], back[name]), name


def test_kaiming_init_is_applied_natively(backend):
    spec = TASKS["mnist-mlp"].model
    weights = backend.weights.export_weights(backend.models.build_model(spec))
    w = weights["fc1.weight"]
    assert w.shape == (200, 784)
    assert abs(w.std() - np.sqrt(2 / 784)) < 0.1 * np.sqrt(2 / 784)
    assert np.all(weights["fc1.bias"] == 0)


def test_checkpoint_round_trip(backend, tmp_path):
    spec = TASKS["mnist-conv-ce"].model
    model = backend.models.build_model(spec)
    path = tmp_path / f"m{backend.CHECKPOINT_SUFFIX}"
    backend.weights.save_checkpoint(model, path)
    other = backend.models.build_model(spec)
    backend.weights.load_checkpoint(other, path)
    a, b = backend.weights.export_weights(model), backend.weights.export_weights(other)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_checkpoint_of_another_model_is_refused(backend, tmp_path):
    from dualbench.common.errors import DataError
    path = tmp_path / f"m{backend.CHECKPOINT_SUFFIX}"
    backend.weights.save_checkpoint(backend.models.build_model(TASKS["mnist-lenet"].model), path)
    with pytest.raises(DataError):
        backend.weights.load_checkpoint(backend.models.build_model(TASKS["mnist-mlp"].model), path)
