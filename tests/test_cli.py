"""The command line as a user meets it: tables, CSV schema, one-line errors, prediction."""
import pandas as pd
import pytest

from dualbench.common.results import RUN_COLUMNS
from tests.conftest import run_cli


def assert_one_line_error(proc, *words):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_help_and_tasks_table():
    assert run_cli("--help").returncode == 0
    proc = run_cli("tasks")
    assert proc.returncode == 0, proc.stderr
    for name in ("mnist-lenet", "mnist-conv-ce", "mnist-mlp-dropout"):
        assert name in proc.stdout
    lenet = [line for line in proc.stdout.splitlines() if line.strip().startswith("mnist-lenet")][0]
    assert lenet.count("61610") == 3   # spec, torch and paddle counts agree


@pytest.mark.parametrize("args, words", [
    (["run", "--task", "no-such-task"], ["no-such-task"]),
    (["run", "--task", "mnist-lenet", "--backend", "jax"], ["jax"]),
    (["run", "--task", "mnist-lenet", "--dataset", "imagenet"], ["imagenet"]),
    (["run", "--task", "mnist-lenet", "--seeds", "a,b"], ["--seeds"]),
    (["run", "--task", "mnist-lenet", "--data-path", "/nonexistent/dir", "--dataset", "mnist"], ["/nonexistent/dir"]),
    (["run", "--task", "mnist-lenet", "--epochs", "zero"], ["--epochs"]),
    (["predict", "--task", "mnist-lenet", "--checkpoint", "/nonexistent.pt", "x.png"], ["/nonexistent.pt"]),
    (["frobnicate"], ["frobnicate"]),
])
def test_user_errors_are_one_line(args, words):
    assert_one_line_error(run_cli(*args), *words)


def test_missing_backend_names_the_extra(tmp_path):
    # simulate a machine without paddle: sitecustomize blocks the import for this process only
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['paddle'] = None\n")
    env = {"PYTHONPATH": str(tmp_path)}
    proc = run_cli("run", "--task", "mnist-lenet", "--backend", "paddle", "--dataset", "synthetic-mnist", env=env)
    assert_one_line_error(proc, "paddle", "dualbench[cpu]")
    tasks = run_cli("tasks", env=env)
    assert tasks.returncode == 0 and "n/a" in tasks.stdout


def test_run_writes_tidy_csv_and_predict_uses_checkpoint(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("run", "--task", "mnist-lenet", "--backend", "torch,paddle", "--dataset", "synthetic-mnist",
                   "--epochs", "2", "--limit-train", "600", "--seeds", "0,1", "--out", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(out / "runs.csv")
    assert list(frame.columns) == RUN_COLUMNS
    assert len(frame) == 2 * 2 * 2   # backends x seeds x epochs
    assert set(frame.backend) == {"torch", "paddle"} and set(frame.seed) == {0, 1}
    final = frame.dropna(subset=["test_acc"])
    assert len(final) == 4 and (final.epoch == 2).all()
    assert frame.synthetic.all() and frame.dataset_sha256.nunique() == 1
    # a second invocation appends, never rewrites
    proc = run_cli("run", "--task", "mnist-lenet", "--backend", "torch", "--dataset", "synthetic-mnist",
                   "--epochs", "1", "--limit-train", "200", "--out", out, "--no-progress")
    assert proc.returncode == 0 and len(pd.read_csv(out / "runs.csv")) == 9

    from PIL import Image
    from dualbench.common.data.sources import load_dataset
    ds = load_dataset("synthetic-mnist")
    Image.fromarray(ds.test_x[0, 0]).save(tmp_path / "digit.png")
    for ckpt in ("mnist-lenet-torch-seed0.pt", "mnist-lenet-paddle-seed0.pdparams"):
        proc = run_cli("predict", "--task", "mnist-lenet", "--checkpoint", out / "checkpoints" / ckpt,
                       tmp_path / "digit.png")
        assert proc.returncode == 0, proc.stderr
        assert "class" in proc.stdout


def test_predict_refuses_a_non_image(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    ckpt = tmp_path / "m.pt"
    import torch
    from dualbench.backends.torch.models import build_model
    from dualbench.common.tasks import TASKS
    torch.save(build_model(TASKS["mnist-lenet"].model).state_dict(), ckpt)
    assert_one_line_error(run_cli("predict", "--task", "mnist-lenet", "--checkpoint", ckpt, bad), "notes.png")


def test_paddle_checkpoint_with_code_is_refused(tmp_path):
    import pickle
    evil = tmp_path / "evil.pdparams"
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))
    evil.write_bytes(pickle.dumps({"conv1.weight": Payload()}))
    proc = run_cli("predict", "--task", "mnist-lenet", "--checkpoint", evil, tmp_path / "x.png")
    assert_one_line_error(proc, "evil.pdparams", "refused")
    assert not marker.exists()
