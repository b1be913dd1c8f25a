"""CIFAR-2 CNN variants and the Food-11 classifier: counts, BN/Dropout modes, clipping, training."""
from dataclasses import replace

import numpy as np
import pytest

from dualbench.engine import run_cell
from dualbench.common.init import shared_weights
from dualbench.common.tasks import TASKS

CIFAR_TASKS = ["cifar2-net", "cifar2-netwidth", "cifar2-netdropout", "cifar2-netbatchnorm"]


@pytest.mark.parametrize("task, count", [("cifar2-net", 18090), ("cifar2-netwidth", 38386),
                                         ("cifar2-netdropout", 38386)])
def test_seed_parameter_counts(backend, task, count):
    assert backend.models.count_parameters(backend.models.build_model(TASKS[task].model)) == count


def to_tensor(backend, x):
    if backend.NAME == "torch":
        import torch
        return torch.from_numpy(x)
    import paddle
    return paddle.to_tensor(x)


def test_batchnorm_statistics_follow_each_frameworks_convention():
    from dualbench import backends
    if not all(backends.is_installed(n) for n in backends.BACKENDS):
        pytest.skip("needs both frameworks")
    spec = TASKS["cifar2-netbatchnorm"].model
    x = np.random.default_rng(0).normal(1.0, 2.0, size=(16, 3, 32, 32)).astype(np.float32)
    stats = {}
    for name in backends.BACKENDS:
        b = backends.load(name)
        model = b.models.build_model(spec)
        b.weights.import_weights(model, shared_weights(spec, 0))
        model.train()
        model(to_tensor(b, x))   # one train-mode forward updates the running statistics
        stats[name] = b.weights.export_weights(model)
    t, p = stats["torch"], stats["paddle"]
    np.testing.assert_allclose(t["conv1_batchnorm.running_mean"], p["conv1_batchnorm.running_mean"], atol=1e-6)
    # torch feeds the unbiased batch variance (n/(n-1)) into running_var, paddle the biased one
    n = 16 * 32 * 32
    batch_var_t = (t["conv1_batchnorm.running_var"] - 0.9) / 0.1
    batch_var_p = (p["conv1_batchnorm.running_var"] - 0.9) / 0.1
    np.testing.assert_allclose(batch_var_t, batch_var_p * n / (n - 1), rtol=1e-4)


def test_dropout_active_in_train_identity_in_eval(backend):
    model = backend.models.build_model(TASKS["cifar2-netdropout"].model)
    x = to_tensor(backend, np.random.default_rng(0).normal(size=(8, 3, 32, 32)).astype(np.float32))
    out = (lambda: model(x).detach().numpy())
    model.train()
    a, b = out(), out()
    model.eval()
    c, d = out(), out()
    assert not np.allclose(a, b)          # fresh Dropout2d masks on every train-mode call
    assert np.array_equal(c, d)           # eval: deterministic, dropout off


def global_grad_norm(backend, model):
    grads = [p.grad.numpy() for p in model.parameters() if p.grad is not None]
    return float(np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads)))


def test_clipping_bounds_the_global_gradient_norm(backend):
    task = replace(TASKS["cifar2-netbatchnorm"], protocol=replace(TASKS["cifar2-netbatchnorm"].protocol,
                                                                  grad_clip=0.05))
    model = backend.models.build_model(task.model)
    state = backend.train.make_state(task, model, backend.device.resolve_device("cpu"))
    rng = np.random.default_rng(0)
    x = to_tensor(backend, rng.normal(size=(32, 3, 32, 32)).astype(np.float32))
    y = to_tensor(backend, rng.integers(0, 2, size=32).astype(np.int64))
    backend.train.train_step(state, x, y)
    assert global_grad_norm(backend, model) <= 0.05 * (1 + 1e-5)
    # without clipping the same step has a far larger norm, so the bound above was real work
    unclipped = replace(task, protocol=replace(task.protocol, grad_clip=None))
    model2 = backend.models.build_model(task.model)
    backend.train.train_step(backend.train.make_state(unclipped, model2, state.dev), x, y)
    assert global_grad_norm(backend, model2) > 0.5


@pytest.fixture(scope="module")
def small_food(tmp_path_factory):
    """A Food-11 folder of 22/11/11 synthetic JPEGs: the real format, small enough for a test."""
    from dualbench.common.data.synth import write_synthetic
    return str(write_synthetic("synthetic-food11", tmp_path_factory.mktemp("food"), n_train=22, n_test=11))


@pytest.mark.slow
@pytest.mark.parametrize("task", CIFAR_TASKS + ["food11-cnn"])
def test_short_training_loss_falls(backend, task, small_food):
    food = task.startswith("food")
    epochs = 2 if food else 3   # food: one Adam step per epoch on 22 images (a 13M-parameter model)
    rows, _ = run_cell({"run_id": "t", "task": task, "backend": backend.NAME, "seed": 0, "epochs": epochs,
                        "dataset": "synthetic-food11" if food else "synthetic-cifar10",
                        "data_path": small_food if food else None, "init": "own", "device": "cpu",
                        "threads": 2}, progress=False)
    losses = [r["train_loss"] for r in rows]
    assert len(losses) == epochs and losses[-1] < losses[0], losses
    assert all(r["synthetic"] for r in rows) and rows[-1]["test_acc"] is not None


def test_augmentation_gives_identical_batches_in_both_backends():
    from dualbench import backends
    from dualbench.common.data.augment import batch_transform
    from dualbench.common.data.split import epoch_batches
    if not all(backends.is_installed(n) for n in backends.BACKENDS):
        pytest.skip("needs both frameworks")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 2, 50).astype(np.int64)
    original = x.copy()
    batches = epoch_batches(50, 16, seed=1, epoch=1)
    seen = {}
    for name in backends.BACKENDS:
        b = backends.load(name)
        loader = b.data.make_loader(x, y, batches, b.device.resolve_device("cpu"), batch_transform("hflip", 1, 1))
        seen[name] = [xb.numpy() for xb, _ in loader]
    flipped = 0
    for t, p, idx in zip(seen["torch"], seen["paddle"], batches):
        assert np.array_equal(t, p)
        flipped += sum(not np.array_equal(t[k], x[i]) for k, i in enumerate(idx))
        assert all(np.array_equal(t[k], x[i]) or np.array_equal(t[k], x[i][..., ::-1]) for k, i in enumerate(idx))
    assert 10 < flipped < 40   # about half of the 50 images are mirrored
    assert np.array_equal(x, original)   # the shared source array is never modified in place
