"""The command line as a user meets it: tables, CSV schema, one-line errors, prediction."""
import numpy as np
import pandas as pd
import pytest

from dualbench.common.errors import UserError
from dualbench.common.results import RUN_COLUMNS
from dualbench.engine import cell_key
from tests.conftest import run_cli


def assert_one_line_error(proc, *words):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.slow
@pytest.mark.e2e
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


@pytest.mark.slow
@pytest.mark.e2e
def test_missing_backend_names_the_extra(tmp_path):
    # simulate a machine without paddle: sitecustomize blocks the import for this process only
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['paddle'] = None\n")
    env = {"PYTHONPATH": str(tmp_path)}
    proc = run_cli("run", "--task", "mnist-lenet", "--backend", "paddle", "--dataset", "synthetic-mnist", env=env)
    assert_one_line_error(proc, "paddle", "dualbench[cpu]")
    tasks = run_cli("tasks", env=env)
    assert tasks.returncode == 0 and "n/a" in tasks.stdout


@pytest.mark.slow
@pytest.mark.e2e
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


@pytest.mark.slow
@pytest.mark.e2e
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


# ---------------------------------------------------------------------------------------------
# In this process (the fast tier): running cells, resuming, failed rows; predicting from a checkpoint


class CannedExecutor:
    """Stands in for the Ray executor: every cell 'finishes' with a canned row (or a canned error), so that
    run_cells' bookkeeping is tested without starting worker processes."""
    kind = "ray"

    def __init__(self, fail_seed=None):
        self.fail_seed, self.ran = fail_seed, []

    def run_cells(self, cells):
        for cell in cells:
            self.ran.append(cell["seed"])
            if cell["seed"] == self.fail_seed:
                yield cell, 1, {"error": "RuntimeError: boom", "node": {"node": "n1"}}
            else:
                row = {"cell_key": cell_key(cell), "task": cell["task"], "backend": cell["backend"],
                       "seed": cell["seed"], "epoch": 1, "status": "ok", "test_acc": 0.5, "run_id": cell["run_id"]}
                yield cell, 0, {"rows": [row]}


def test_run_cells_records_failures_and_resumes_only_what_is_missing(tmp_path):
    from dualbench.common.tasks import get_task
    from dualbench.run import parse_seeds, plan_cells, run_cells
    assert parse_seeds("0, 2,5") == [0, 2, 5]
    with pytest.raises(UserError, match="comma-separated integers"):
        parse_seeds("0,x")
    cells = plan_cells([get_task("mnist-mlp")], ["torch", "paddle"], [0, 1], tmp_path, "r1",
                       dataset="synthetic-mnist", threads=1)
    assert [(c["seed"], c["backend"]) for c in cells] == [(0, "torch"), (0, "paddle"), (1, "torch"), (1, "paddle")]
    csv_path = tmp_path / "runs.csv"
    executor = CannedExecutor(fail_seed=1)
    finals, failed = run_cells(cells, csv_path, executor)
    assert len(finals) == 2 and failed == 2
    frame = pd.read_csv(csv_path)
    assert list(frame.columns) == RUN_COLUMNS
    bad = frame[frame.status == "failed"]
    assert len(bad) == 2 and set(bad.error) == {"RuntimeError: boom"} and set(bad.node) == {"n1"}
    again = CannedExecutor()
    finals, failed = run_cells(cells, csv_path, again)     # the failed cells are retried, the rest skipped
    assert again.ran == [1, 1] and failed == 0 and len(pd.read_csv(csv_path)) == 6


def test_predict_image_in_process(tmp_path, backend, capsys):
    from PIL import Image

    from dualbench.common.tasks import get_task
    from dualbench.predict import load_image, predict_image
    task = get_task("mnist-lenet")
    backend.device.seed(0)
    model = backend.models.build_model(task.model)
    checkpoint = tmp_path / f"net{backend.CHECKPOINT_SUFFIX}"
    backend.weights.save_checkpoint(model, checkpoint)
    Image.fromarray(np.full((40, 30), 200, np.uint8)).save(tmp_path / "digit.png")
    array = load_image(tmp_path / "digit.png", (1, 28, 28), invert=True)
    assert array.shape == (1, 1, 28, 28) and array.dtype == np.uint8 and int(array.max()) == 55
    predict_image("mnist-lenet", checkpoint, tmp_path / "digit.png")
    assert "class" in capsys.readouterr().out
    with pytest.raises(UserError, match="cannot tell the backend"):
        predict_image("mnist-lenet", tmp_path / "net.bin", tmp_path / "digit.png")
