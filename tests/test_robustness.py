"""Runs survive what real runs do: divergence, a crashing backend, SIGTERM/SIGINT/kill -9, reruns."""
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from common.results import RUN_COLUMNS
from tests.conftest import ROOT, run_cli

QUICK = ["--dataset", "synthetic-mnist", "--limit-train", "300", "--no-progress"]


def test_divergence_is_recorded_not_hidden(tmp_path):
    proc = run_cli("run", "--task", "mnist-conv-mse", "--lr", "1e6", "--epochs", "3", "--out", tmp_path, *QUICK)
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(tmp_path / "runs.csv")
    diverged = frame[frame.status == "diverged"]
    assert set(diverged.backend) == {"torch", "paddle"}
    assert (diverged.diverged_step >= 1).all() and diverged.test_acc.isna().all()
    assert "diverged at step" in proc.stderr
    # the run stopped at the divergence: no epoch rows after it
    assert frame.groupby("backend").epoch.max().max() == diverged.epoch.max()


def test_failing_backend_is_recorded_and_others_go_on(tmp_path):
    # paddle "installed" but crashing on import in the worker, as a broken install would
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.abc, importlib.machinery, sys\n"
        "class Boom(importlib.abc.Loader):\n"
        "    def create_module(self, spec): return None\n"
        "    def exec_module(self, module): raise RuntimeError('simulated crash in paddle')\n"
        "class Finder(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        return importlib.machinery.ModuleSpec(name, Boom()) if name == 'paddle' else None\n"
        "sys.meta_path.insert(0, Finder())\n")
    out = tmp_path / "out"
    proc = run_cli("run", "--task", "mnist-linear-mse", "--epochs", "1", "--seeds", "0,1", "--out", out, *QUICK,
                   env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 1
    frame = pd.read_csv(out / "runs.csv")
    failed = frame[frame.status == "failed"]
    assert len(failed) == 2 and set(failed.backend) == {"paddle"}
    assert failed.error.str.contains("simulated crash in paddle").all()
    assert frame[(frame.backend == "torch")].test_acc.notna().sum() == 2


def wait_for_rows(path, n, proc, timeout=240):
    start = time.time()
    while time.time() - start < timeout:
        if path.exists() and len(pd.read_csv(path)) >= n:
            return
        assert proc.poll() is None, "run ended before it could be interrupted"
        time.sleep(0.2)
    raise AssertionError("no rows appeared")


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_interrupt_then_resume(tmp_path, sig, code):
    args = [sys.executable, "-m", "benchmarks.cli", "run", "--task", "mnist-linear-mse", "--backend", "torch",
            "--seeds", "0,1,2,3", "--epochs", "1", "--out", str(tmp_path), *QUICK]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_rows(tmp_path / "runs.csv", 1, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "rerun the same command to resume" in err
    first = pd.read_csv(tmp_path / "runs.csv")
    assert list(first.columns) == RUN_COLUMNS and first.test_acc.notna().all()   # only finished cells
    assert 1 <= len(first) < 4
    rerun = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming: {len(first)} of 4 cells already finished" in rerun.stderr
    final = pd.read_csv(tmp_path / "runs.csv")
    assert sorted(final.seed) == [0, 1, 2, 3]   # nothing lost, nothing duplicated


def test_kill_9_never_corrupts_the_csv(tmp_path):
    args = [sys.executable, "-m", "benchmarks.cli", "run", "--task", "mnist-linear-mse", "--backend", "torch",
            "--seeds", "0,1,2,3,4,5", "--epochs", "1", "--out", str(tmp_path), *QUICK]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_for_rows(tmp_path / "runs.csv", 2, proc)
    os.killpg(proc.pid, signal.SIGKILL)   # parent and worker, as an OOM killer or a crash would
    proc.wait()
    frame = pd.read_csv(tmp_path / "runs.csv")
    assert list(frame.columns) == RUN_COLUMNS and frame.test_acc.notna().all()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".runs.csv")]   # no temp files left behind


def test_reruns_are_bit_identical(tmp_path, backend):
    from benchmarks.engine import run_cell
    cell = {"run_id": "r", "task": "mnist-lenet", "backend": backend.NAME, "seed": 5, "epochs": 2,
            "dataset": "synthetic-mnist", "limit_train": 300, "init": "own", "device": "cpu", "threads": 2}
    metrics = ["train_loss", "train_acc", "test_loss", "test_acc", "final_train_acc", "batch_order_hash"]
    first = [{k: r.get(k) for k in metrics} for r in run_cell(cell, progress=False)[0]]
    second = [{k: r.get(k) for k in metrics} for r in run_cell(cell, progress=False)[0]]
    assert first == second
