"""Runs survive what real runs do: divergence, a crashing backend, SIGTERM/SIGINT/kill -9, reruns."""
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from dualbench.common.results import RUN_COLUMNS
from tests.conftest import ROOT, default_signals, run_cli

QUICK = ["--dataset", "synthetic-mnist", "--limit-train", "300", "--no-progress"]


@pytest.mark.slow
@pytest.mark.e2e
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


# A sitecustomize.py that makes paddle "installed" but `import paddle` run CRASH instead (in every
# process started with its folder on PYTHONPATH), as a broken install or a killed worker would.
PADDLE_IMPORT_HOOK = (
    "import importlib.abc, importlib.machinery, os, signal, sys\n"
    "class Boom(importlib.abc.Loader):\n"
    "    def create_module(self, spec): return None\n"
    "    def exec_module(self, module): {crash}\n"
    "class Finder(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path, target=None):\n"
    "        return importlib.machinery.ModuleSpec(name, Boom()) if name == 'paddle' else None\n"
    "sys.meta_path.insert(0, Finder())\n")
PADDLE_RAISES = PADDLE_IMPORT_HOOK.format(crash="raise RuntimeError('simulated crash in paddle')")
PADDLE_KILLED = PADDLE_IMPORT_HOOK.format(crash="os.kill(os.getpid(), signal.SIGKILL)")   # as the OOM killer would


@pytest.mark.slow
@pytest.mark.e2e
def test_failing_backend_is_recorded_and_others_go_on(tmp_path):
    # paddle "installed" but crashing on import in the worker, as a broken install would
    (tmp_path / "sitecustomize.py").write_text(PADDLE_RAISES)
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


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_interrupt_then_resume(tmp_path, sig, code):
    args = [sys.executable, "-m", "dualbench.cli", "run", "--task", "mnist-linear-mse", "--backend", "torch",
            "--seeds", "0,1,2,3", "--epochs", "1", "--out", str(tmp_path), *QUICK]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)   # whatever the dispositions this test was started with
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


@pytest.mark.slow
@pytest.mark.e2e
def test_kill_9_never_corrupts_the_csv(tmp_path):
    args = [sys.executable, "-m", "dualbench.cli", "run", "--task", "mnist-linear-mse", "--backend", "torch",
            "--seeds", "0,1,2,3", "--epochs", "1", "--out", str(tmp_path), *QUICK]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_for_rows(tmp_path / "runs.csv", 2, proc)
    os.killpg(proc.pid, signal.SIGKILL)   # parent and worker, as an OOM killer or a crash would
    proc.wait()
    frame = pd.read_csv(tmp_path / "runs.csv")
    assert list(frame.columns) == RUN_COLUMNS and frame.test_acc.notna().all()
    # what a kill -9 can leave behind (the cell's temp folder; a CSV temp file if it hit mid-write) is
    # removed by the next run, which also finishes the suite without duplicates
    (tmp_path / ".runs.csv.abc123.part").write_text("half a row")
    rerun = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".runs.csv")]
    assert not list(Path(tempfile.gettempdir()).glob(f"dualbench-cell-{proc.pid}-*"))
    assert sorted(pd.read_csv(tmp_path / "runs.csv").seed) == [0, 1, 2, 3]


def test_reruns_are_bit_identical(tmp_path, backend):
    from dualbench.engine import run_cell
    cell = {"run_id": "r", "task": "mnist-mlp-dropout", "backend": backend.NAME, "seed": 5, "epochs": 2,
            "dataset": "synthetic-mnist", "limit_train": 300, "init": "own", "device": "cpu", "threads": 2}
    # every number of every row, except the clock's (epoch time, throughput, timestamp)
    clock = {"epoch_seconds", "samples_per_s", "timestamp"}
    first, second = ([{k: v for k, v in r.items() if k not in clock} for r in run_cell(cell, progress=False)[0]]
                     for _ in range(2))
    assert first == second
    assert {"train_loss", "test_acc", "output_grad", "output_grad_init", "batch_order_hash"} <= set().union(*first)


# ---------------------------------------------------------------------------------------------
# dualbench bench: failed and diverged cells are rows of bench.csv, reported, never in a ratio

TINY_BENCH = ["--repeats", "2", "--ci-target", "0", "--windows", "2", "--steps", "2", "--warmup", "1", "--warmup-seconds", "0",
              "--threads", "1", "--no-ttt", "--no-progress", "--no-tune", "--mode", "train", "--no-aa"]


def read_bench(folder):
    from dualbench.bench import BENCH_COLUMNS
    from dualbench.common.results import read_csv
    return read_csv(folder / "bench.csv", BENCH_COLUMNS)


@pytest.mark.slow
@pytest.mark.e2e
def test_bench_failing_backend_is_recorded_reported_and_retried(tmp_path):
    from dualbench import backends
    if not backends.is_installed("torch"):
        pytest.skip("torch not installed")
    (tmp_path / "sitecustomize.py").write_text(PADDLE_RAISES)
    out = tmp_path / "out"
    args = ["bench", "--tasks", "mnist-linear-mse", *TINY_BENCH, "--out", out]
    proc = run_cli(*args, env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"dualbench bench: 2 cell(s) failed (status 'failed' in {out / 'bench.csv'}); rerun the same command "
        "to retry them")
    frame = read_bench(out)
    paddle, torch = frame[frame.backend == "paddle"], frame[frame.backend == "torch"]
    assert len(paddle) == 4 and (paddle.status == "failed").all()            # 2 repeats x (engine, bare)
    assert (paddle.error == "RuntimeError: simulated crash in paddle").all()
    assert paddle.samples_per_s.isna().all() and paddle.ms_per_step.isna().all()   # no timing, not a 0
    assert sorted(paddle.repeat) == [1, 1, 2, 2] and set(paddle.loop) == {"engine", "bare"}
    assert len(torch) == 4 and (torch.status == "ok").all() and (torch.samples_per_s > 0).all()

    report = run_cli("report", out, "--no-plots")
    assert report.returncode == 0, report.stderr
    text = (out / "report.md").read_text()
    assert "### Failed / diverged cells" in text
    assert ("| mnist-linear-mse | paddle | cpu, eager fp32, 1 thread, default switches, batch 100 | engine, bare | 1, 2 | failed | "
            "RuntimeError: simulated crash in paddle |") in text
    speed_row = next(line for line in text.splitlines() if line.startswith("| mnist-linear-mse | cpu, eager"))
    cells = [c.strip() for c in speed_row.strip("|").split("|")]
    assert cells[4:10] == ["n/a", "n/a", "n/a", "n/a (paddle failed)", "0", "paddle: 2 failed"]   # no ratio, no 0 throughput
    summary = pd.read_csv(out / "speed_summary.csv")
    assert summary.paddle_samples_per_s.isna().all() and summary.ratio.isna().all()
    assert list(summary.paddle_failed) == [2] and list(summary.torch_failed) == [0]

    # the same command with paddle working: only the failed cells run again, and they now count
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "resuming, 2 of 4 cells already in" in proc.stderr and "retrying 2 failed cell(s)" in proc.stderr
    frame = read_bench(out)
    assert len(frame) == 12 and (frame[frame.backend == "torch"].status == "ok").sum() == 4
    assert run_cli("report", out, "--no-plots").returncode == 0
    text = (out / "report.md").read_text()
    assert "Failed / diverged cells" not in text
    summary = pd.read_csv(out / "speed_summary.csv")
    assert summary.pairs.tolist() == [2] and (summary.ratio > 0).all() and list(summary.paddle_failed) == [0]


def test_bench_killed_worker_is_a_failed_cell(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(PADDLE_KILLED)
    out = tmp_path / "out"
    proc = run_cli("bench", "--tasks", "mnist-linear-mse", "--backends", "paddle", *TINY_BENCH, "--no-bare",
                   "--out", out, env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 1, proc.stderr
    frame = read_bench(out)
    assert len(frame) == 2 and (frame.status == "failed").all()   # the worker is restarted for the next cell
    assert frame.error.str.startswith("worker killed by signal 9 (possibly out of memory at batch size 100; "
                                      "try a smaller --batch-size)").all()


@pytest.mark.slow
@pytest.mark.e2e
def test_bench_divergence_is_recorded_and_not_retried(tmp_path):
    """A learning rate of 1e6 (patched into the task in every process): the loss becomes NaN/Inf within a
    few steps; the cells are `diverged` with the step and last finite loss, exit 0, and a rerun skips them."""
    from dualbench import backends
    names = [n for n in backends.BACKENDS if backends.is_installed(n)]
    if not names:
        pytest.skip("no framework installed")
    (tmp_path / "sitecustomize.py").write_text(
        "import dualbench.common.tasks as tasks\n"
        "tasks.TASKS['mnist-conv-mse'] = tasks.with_overrides(tasks.TASKS['mnist-conv-mse'], lr=1e6)\n")
    out = tmp_path / "out"
    args = ["bench", "--tasks", "mnist-conv-mse", "--backends", ",".join(names), *TINY_BENCH, "--repeats", "1",
            "--out", out]
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    proc = run_cli(*args, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"{len(names)} cell(s) diverged (status 'diverged' in {out / 'bench.csv'}" in proc.stderr
    frame = read_bench(out)
    assert len(frame) == 2 * len(names) and (frame.status == "diverged").all()
    assert frame.error.str.match(r"diverged (at step \d+|within steps \d+-\d+): loss (nan|inf|-inf)"
                                 r"; last finite loss [-+\d.e]+ at step \d+$").all(), frame.error.tolist()
    assert frame.samples_per_s.isna().all()
    again = run_cli(*args, env=env)
    assert again.returncode == 0 and f"resuming, {len(names)} of {len(names)} cells already" in again.stderr
    assert len(read_bench(out)) == len(frame)
    assert run_cli("report", out, "--no-plots").returncode == 0
    text = (out / "report.md").read_text()
    assert "| diverged | diverged " in text and "n/a (" in text


def test_out_of_memory_names_the_batch_size_and_suggests_a_smaller_one():
    from dualbench.bench.worker import OOM_ADVICE
    from dualbench.worker import error_line
    # paddle raises MemoryError with a multi-line message whose last line is a hint with a source location
    paddle_oom = MemoryError("(ResourceExhausted) Fail to alloc memory of 4398046511104 size, error code is 12.\n"
                             "  [Hint: Expected error == 0, but received error:12 != 0:0.] "
                             "(at /paddle/paddle/phi/core/memory/allocation/cpu_allocator.cc:44)\n")
    assert error_line(paddle_oom, {"batch_size": 512}, OOM_ADVICE) == (
        "MemoryError: (ResourceExhausted) Fail to alloc memory of 4398046511104 size, error code is 12. "
        "(out of memory at batch size 512; try a smaller --batch-size)")

    class OutOfMemoryError(RuntimeError):   # torch.OutOfMemoryError's name and message
        pass
    line = error_line(OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                                       "capacity of 79.1 GiB of which 1.2 GiB is free."), {"batch_size": 4096})
    assert line.startswith("OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.")
    assert line.endswith("(out of memory at batch size 4096; try a smaller --batch-size or --limit-train)")
    assert error_line(ValueError("bad\nlast line"), {"batch_size": 8}) == "ValueError: last line"


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("name", ["torch", "paddle"])
def test_dataset_error_propagates_from_the_native_loader(name):
    """paddle's DataLoader reads in a thread even with num_workers=0; an error there used to leave the
    training loop waiting forever. Both loaders must raise it in the caller, after the good batches."""
    from dualbench import backends
    if not backends.is_installed(name):
        pytest.skip(f"{name} not installed")
    dev = "__import__('torch').device('cpu')" if name == "torch" else "'cpu'"
    code = (
        "import numpy as np\n"
        "from dualbench import backends\n"
        f"data = backends.load('{name}', 'data')\n"
        f"dev = {dev}\n"
        "def transform(xb, i):\n"
        "    if i == 2: raise ValueError('transform failed on batch 2')\n"
        "    return xb\n"
        "x, y = np.zeros((20, 1, 4, 4), 'float32'), np.zeros(20, 'int64')\n"
        "seen = []\n"
        "try:\n"
        "    for xb, yb in data.make_loader(x, y, [list(range(4 * i, 4 * i + 4)) for i in range(5)], dev, transform):\n"
        "        seen.append(len(yb))\n"
        "except ValueError as e:\n"
        "    print('raised', e, 'after', len(seen))\n")
    try:
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name}'s DataLoader hung after an exception in the dataset")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "raised transform failed on batch 2 after 2"


def test_bench_or_parity_on_a_folder_being_benchmarked_is_refused_with_one_line(tmp_path):
    """A second bench would time two suites on the same cores and interleave their rows; a second parity
    would overwrite parity.csv with its own tasks only. (`run` and `study` may share a folder: their
    appends are serialised, e.g. one process per backend.)"""
    from dualbench import backends
    from dualbench.common.fsutil import folder_lock
    if not all(backends.is_installed(n) for n in backends.BACKENDS):
        pytest.skip("needs both frameworks")
    (tmp_path / "bench.csv").write_text("kept as it is\n")
    with folder_lock(tmp_path, "bench"):
        for args in (["bench", "--tasks", "mnist-linear-mse", "--repeats", "1", "--ci-target", "0", "--no-progress"],
                     ["parity", "--task", "mnist-linear-mse"]):
            proc = run_cli(*args, "--out", tmp_path)
            assert proc.returncode == 2
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and str(tmp_path) in lines[0] and "dualbench bench (pid" in lines[0], proc.stderr
    assert (tmp_path / "bench.csv").read_text() == "kept as it is\n" and not (tmp_path / "parity.csv").exists()


def test_the_folder_lock_dies_with_its_holder_even_on_kill_9(tmp_path):
    from dualbench.common.fsutil import folder_lock
    holder = ("import os, signal; from dualbench.common.fsutil import folder_lock\n"
              f"with folder_lock({str(tmp_path)!r}, 'parity'):\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", holder], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert "dualbench parity (pid" in (tmp_path / ".dualbench.lock").read_text()   # it did hold the lock
    with folder_lock(tmp_path, "bench"):   # no stale lock
        assert "dualbench bench (pid" in (tmp_path / ".dualbench.lock").read_text()


def test_a_command_failing_before_writing_leaves_no_folder_behind(tmp_path):
    from dualbench.common.errors import UserError
    from dualbench.common.fsutil import folder_lock
    out = tmp_path / "new" / "out"
    with pytest.raises(UserError), folder_lock(out, "bench"):
        raise UserError("bad input")
    assert not out.exists()
    with folder_lock(out, "bench"):
        (out / "bench.csv").write_text("x\n")
    assert sorted(p.name for p in out.iterdir()) == [".dualbench.lock", "bench.csv"]


def test_atomic_writes_give_result_files_normal_permissions(tmp_path):
    from dualbench.common.fsutil import atomic_write_text
    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "new.csv", "a\n")
        assert (tmp_path / "new.csv").stat().st_mode & 0o777 == 0o644   # as open() would, not mkstemp's 0o600
        (tmp_path / "old.csv").write_text("a\n")
        os.chmod(tmp_path / "old.csv", 0o640)
        atomic_write_text(tmp_path / "old.csv", "b\n")
        assert (tmp_path / "old.csv").stat().st_mode & 0o777 == 0o640   # an existing file keeps its mode
    finally:
        os.umask(mask)


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:   # a zombie (dead, not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
@pytest.mark.parametrize("command", ["bench", "run"])
def test_workers_die_with_a_parent_killed_by_kill_9(tmp_path, command):
    """kill -9 of the parent alone (not its process group): its workers, mid-cell, must not keep
    computing beside the rerun that resumes (they would skew its timings)."""
    if command == "bench":   # cells of ~10 s each: a worker still alive after 3 s was orphaned mid-cell
        args = ["bench", "--tasks", "mnist-conv-mse", "--repeats", "1", "--ci-target", "0", "--windows", "6",
                "--window-seconds", "2", "--threads", "1", "--no-ttt", "--no-bare", "--no-progress", "--no-tune",
                "--mode", "train"]
    else:
        args = ["run", "--task", "mnist-conv-mse", "--backend", "torch", "--epochs", "50", "--dataset",
                "synthetic-mnist", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "dualbench.cli", *args, "--out", str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    workers = []
    while time.time() < deadline and not workers:
        assert proc.poll() is None, "ended before its workers could be seen"
        workers = children(proc.pid)
        time.sleep(0.2)
    assert workers, "no worker started"
    time.sleep(3)   # the worker is importing or computing
    proc.kill()
    proc.wait()
    deadline = time.time() + 3
    while time.time() < deadline and any(alive(w) for w in workers):
        time.sleep(0.1)
    left = [w for w in workers if alive(w)]
    for w in left:
        os.kill(w, signal.SIGKILL)
    assert not left, "workers outlived their parent"
