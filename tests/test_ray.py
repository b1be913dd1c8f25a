"""--executor ray on a real local Ray cluster: the same rows as the local executor, pairs on one node, a killed
Ray worker, Ctrl-C and SIGTERM on the driver, resume, data checked on the node, and the one-line error
without Ray. The tests that need Ray are skipped where it is not installed (pip install '.[cluster]')."""
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from dualbench.timings.table import BENCH_COLUMNS
from dualbench.common.errors import UserError
from dualbench.common.results import RUN_COLUMNS, read_csv
from tests.conftest import ROOT, default_signals, run_cli

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray is not installed (pip install '.[cluster]')")

# Offline, and no token written to ~/.ray by the test's own cluster.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
HOST = socket.gethostname()
# `import ray` raises ImportError in a process started with this (as where ray is not installed)
BLOCK_RAY = "import sys; sys.modules['ray'] = None\n"
TIMING = ["run_id", "timestamp", "epoch_seconds", "samples_per_s"]   # the only run columns allowed to differ
CLUSTER_MARKER = "DUALBENCH_TEST_CLUSTER"


def cli_code(args, prelude=""):
    return [sys.executable, "-c", prelude + f"import sys\nfrom dualbench.cli import main\nsys.exit(main({args!r}))"]


def spawn(cmd, **kw):
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **RAY_ENV, **kw.pop("env", {})}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=default_signals, **kw)


def run_ray_cli(*args, env=None):
    return run_cli(*args, env={**RAY_ENV, **(env or {})})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(data_home):
    """A one-node Ray cluster started like a user's head node (`ray start --head`), 2 CPUs; its address."""
    temp = tempfile.mkdtemp(prefix="dbray-", dir="/tmp")   # short: Ray's socket paths must fit 107 characters
    port = free_port()
    log = open(Path(temp) / "head.log", "w+")
    head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                             "--num-cpus=2", "--num-gpus=0", f"--port={port}", "--node-ip-address=127.0.0.1",
                             "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats"],
                            env={**os.environ, **RAY_ENV, CLUSTER_MARKER: temp}, stdout=log,
                            stderr=subprocess.STDOUT, preexec_fn=default_signals)
    try:
        start = time.time()
        while "Ray runtime started" not in Path(log.name).read_text():
            assert head.poll() is None and time.time() - start < 120, Path(log.name).read_text()[-2000:]
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)   # `ray start --block` stops the processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        log.close()
        import shutil
        shutil.rmtree(temp, ignore_errors=True)


def processes():
    """{pid: (parent pid, argv)} of the machine's processes."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            out[int(entry.name)] = (ppid, argv)
    return out


def started_by_the_cluster(pid):
    """True for a process that inherited the test cluster's marker (every process under its raylet does):
    the tests of other files, run beside these (pytest -n), start workers of their own."""
    try:
        return f"{CLUSTER_MARKER}=".encode() in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def our_workers(module):
    """{pid: parent pid} of this checkout's worker processes (`python -m MODULE` from this venv) under the
    test cluster."""
    venv = Path(sys.executable).parent
    return {pid: ppid for pid, (ppid, argv) in processes().items()
            if argv[1:3] == ["-m", module] and Path(argv[0]).parent == venv and started_by_the_cluster(pid)}


def wait_for(condition, proc, timeout, what):
    start = time.time()
    while not condition():
        assert proc.poll() is None, f"the command ended before {what}: {proc.communicate()[1][-3000:]}"
        assert time.time() - start < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


def finished_rows(frame):
    return frame[frame["status"] != "failed"]


# ---------------------------------------------------------------------------------------------
# Without Ray


@pytest.mark.parametrize("command", [
    ["run", "--task", "mnist-mlp", "--dataset", "synthetic-mnist"],
    ["study", "lenet", "--datasets", "mnist5k"],
    ["bench", "--tasks", "mnist-mlp"],
])
def test_ray_executor_without_ray_is_one_line_naming_the_extra(command, tmp_path):
    proc = subprocess.run(cli_code(command + ["--executor", "ray", "--out", str(tmp_path)], BLOCK_RAY), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("dualbench: error: --executor ray needs Ray, which is not installed: "
                                   "pip install 'dualbench[cluster]'")
    assert not any(tmp_path.iterdir())


def test_ray_address_without_the_ray_executor_is_refused(tmp_path):
    proc = run_cli("run", "--task", "mnist-mlp", "--ray-address", "auto", "--out", tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == "dualbench: error: --ray-address needs --executor ray"


def test_report_never_forms_a_ratio_across_nodes(tmp_path, capsys):
    from dualbench.report import print_speed_summary, speed_summary
    rows = []
    for node, backends in (("a", ("torch", "paddle")), ("b", ("torch", "paddle")), ("c", ("torch",)),
                           ("d", ("paddle",))):
        for backend in backends:
            for repeat in (1, 2, 3):
                rows.append({"cell_key": f"{node}{backend}{repeat}", "suite": "default", "task": "mnist-mlp",
                             "backend": backend, "loop": "engine", "mode": "eager", "precision": "fp32",
                             "threads": 1, "batch_size": 64, "repeat": repeat, "device": "cpu",
                             "dataset": "random-uint8-n100", "samples_per_s": 1000.0 * (1 + repeat / 100)
                             * (2 if node == "b" and backend == "torch" else 1), "ms_per_step": 1.0,
                             "timestamp": f"2026-01-01T00:00:0{repeat}", "status": "ok", "node": node})
    bench = pd.DataFrame(rows).reindex(columns=BENCH_COLUMNS)
    summary = speed_summary(bench).set_index("node")
    assert sorted(summary.index) == ["a", "b", "c", "d"]
    assert summary.loc["a", "pairs"] == 3 and summary.loc["a", "ratio"] == pytest.approx(1.0)
    assert summary.loc["b", "ratio"] == pytest.approx(2.0)
    # torch measured on c and paddle on d: no pair, so no ratio
    assert summary.loc["c", "pairs"] == 0 and summary.loc["d", "pairs"] == 0
    path = tmp_path / "bench.csv"
    bench.to_csv(path, index=False)
    print_speed_summary(path)
    assert " node " in capsys.readouterr().out   # rows from several nodes say which

    # a file written before rows recorded their node is one node; so are its old rows among new ones of one node
    old = bench[bench["node"].isin(["a"])].drop(columns=["node", "node_hardware"])
    assert speed_summary(old)["pairs"].tolist() == [3]
    mixed = bench[bench["node"] == "a"].copy()
    mixed.loc[mixed["repeat"] < 3, "node"] = None
    assert speed_summary(mixed)["pairs"].tolist() == [3]


def test_node_dataset_check_names_the_node_and_the_dataset(tmp_path, monkeypatch):
    from dualbench.common.data.remote import driver_checksum, node_dataset_problem
    from dualbench.common.data.synth import write_synthetic
    expected = driver_checksum("synthetic-mnist")
    assert node_dataset_problem("synthetic-mnist", None, expected) is None
    monkeypatch.setenv("DUALBENCH_DATA", str(tmp_path))
    write_synthetic("synthetic-mnist", tmp_path / "synthetic-mnist", n_train=1500)   # another copy on "the node"
    problem = node_dataset_problem("synthetic-mnist", None, expected)
    assert problem.startswith(f"dataset 'synthetic-mnist' on node {HOST} ") and "not substituted" in problem
    missing = node_dataset_problem("mnist", None, expected)
    assert missing.startswith(f"dataset 'mnist' is not on node {HOST} ")


# ---------------------------------------------------------------------------------------------
# The executors' own logic, without a cluster (the fast tier)


@needs_ray
def test_cells_and_shards_are_placed_by_configuration_and_resources():
    from dualbench.bench import on_ray
    from dualbench.ray_executor import check_fits, first_line, lost_line, reservation
    nodes = [{"id": "n1", "host": "a", "cpus": 2.0, "gpus": 0.0}, {"id": "n2", "host": "b", "cpus": 8.0, "gpus": 1.0}]
    assert reservation({"threads": 2, "device": "cpu"}, nodes) == (2.0, 0.0)
    assert reservation({"threads": 1, "device": "auto"}, nodes) == (1.0, 1.0)   # the cluster has a GPU
    check_fits(8.0, 1.0, nodes)
    with pytest.raises(UserError, match="no node of the Ray cluster has 16 CPUs"):
        check_fits(16.0, 0.0, nodes)
    assert first_line(ValueError("bad\nmore")) == "ValueError: bad"
    assert lost_line(RuntimeError("gone"), {"node": "b"}) == "Ray worker lost on node b mid-cell (RuntimeError: gone)"

    def cell(task, backend, repeat, stage="equal"):
        return {"suite": "default", "device": "cpu", "task": task, "kind": "speed", "batch_size": 64,
                "stage": stage, "mode": "eager", "precision": "fp32", "threads": 2, "knobs": "",
                "backend": backend, "repeat": repeat}
    cells = [cell(t, b, 1) for t in ("lenet", "mlp", "linear") for b in ("torch", "paddle")]
    keys = list(dict.fromkeys(on_ray.placement_key(c) for c in cells))
    assert len(keys) == 3     # torch and paddle of a configuration, every repeat: one key, one node
    assert on_ray.placement_key(cell("mlp", "torch", 5)) == on_ray.placement_key(cell("mlp", "paddle", 1))
    earlier = {keys[1]: "b"}   # mlp was measured on host b: it stays there; the others share the load
    assignment = on_ray.assign_nodes(keys, nodes, earlier)
    assert assignment == {keys[0]: "n1", keys[1]: "n2", keys[2]: "n1"}
    shards = on_ray.shard_groups([{"repeat": 1, "stage": "equal", "cells": cells}], assignment)
    assert [c["task"] for c in shards["n2"][0]["cells"]] == ["mlp", "mlp"]
    assert [c["task"] for c in shards["n1"][0]["cells"]] == ["lenet", "lenet", "linear", "linear"]   # plan order


@needs_ray
def test_signals_wait_until_between_ray_calls():
    """Ctrl-C inside deferred_signals is noted and raised by raise_pending_signal (outside Ray's C code)."""
    from dualbench.ray_executor import deferred_signals, raise_pending_signal
    with pytest.raises(KeyboardInterrupt):
        with deferred_signals():
            signal.raise_signal(signal.SIGINT)
            seen = True             # the handler did not raise: the signal was only noted
            raise_pending_signal()
    assert seen


# ---------------------------------------------------------------------------------------------
# Through Ray


TINY_STUDY = """
from dualbench.study.studies import STUDIES, Arm, Comparison, DataPlan, Study
STUDIES["tiny-ray"] = Study("tiny-ray", "tiny study", "001", arms=(Arm("mnist-mlp"), Arm("mnist-mlp-relu-logits")),
                            data=(DataPlan("mnist", fallback="synthetic-mnist", limit_train=300, epochs=2, seeds=(0,),
                                           why="test data"),),
                            comparisons=(Comparison("mnist-mlp", "mnist-mlp-relu-logits", "the bug hurts"),))
"""


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.ray
@pytest.mark.xdist_group("ray")
@needs_ray
def test_study_through_a_local_ray_instance_matches_the_local_executor_bit_for_bit(tmp_path):
    """Local run with ray made unimportable (the local executor never imports it); the same study through
    Ray started by the command itself (no --ray-address): every metric identical, row by row."""
    args = ["study", "tiny-ray", "--backend", "torch,paddle", "--threads", "1", "--no-progress"]
    local = subprocess.run(cli_code(args + ["--out", str(tmp_path / "local")], BLOCK_RAY + TINY_STUDY), cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stderr
    remote = subprocess.run(cli_code(args + ["--executor", "ray", "--out", str(tmp_path / "ray")], TINY_STUDY),
                            cwd=ROOT, env={**os.environ, **RAY_ENV}, capture_output=True, text=True, timeout=600)
    assert remote.returncode == 0, remote.stderr
    assert "a local Ray instance: 1 node(s)" in remote.stderr
    frames = [read_csv(tmp_path / side / "tiny-ray" / "runs.csv", RUN_COLUMNS)
              .sort_values(["cell_key", "epoch"]).reset_index(drop=True) for side in ("local", "ray")]
    assert len(frames[0]) == 2 * 2 * 2 and set(frames[0]["status"]) == {"ok"}
    assert set(frames[1]["node"]) == {HOST} and frames[1]["node_hardware"].notna().all()
    pd.testing.assert_frame_equal(frames[0].drop(columns=TIMING), frames[1].drop(columns=TIMING), check_exact=True)
    assert (tmp_path / "ray" / "tiny-ray" / "study.md").exists()


def tiny_bench(out, *extra):
    return ["bench", "--tasks", "mnist-linear-mse", "--repeats", "2", "--ci-target", "0", "--windows", "2",
            "--steps", "2", "--warmup", "1", "--warmup-seconds", "0", "--threads", "1", "--no-ttt", "--no-progress",
            "--no-tune", "--mode", "train", "--no-aa", "--out", str(out), *extra]


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.ray
@pytest.mark.xdist_group("ray")
@needs_ray
def test_bench_through_ray_stops_on_ctrl_c_resumes_and_matches_the_local_cells(tmp_path, cluster):
    local = run_cli(*tiny_bench(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    csv_path = tmp_path / "ray" / "bench.csv"
    args = tiny_bench(tmp_path / "ray", "--executor", "ray", "--ray-address", cluster)
    proc = spawn([sys.executable, "-m", "dualbench.cli", *args])
    wait_for(lambda: csv_path.exists() and len(pd.read_csv(csv_path)) >= 2, proc, 180, "the first cell")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    first = read_csv(csv_path, BENCH_COLUMNS)
    assert 2 <= len(first) < 8 and set(first["status"]) == {"ok"}   # finished cells only, both loops each
    time.sleep(2)
    assert our_workers("dualbench.bench.worker") == {}   # the cancelled task's workers are gone

    rerun = run_ray_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming, {len(first) // 2} of 4 cells already in" in rerun.stderr
    frames = [read_csv(tmp_path / side / "bench.csv", BENCH_COLUMNS).sort_values(["cell_key"]).reset_index(drop=True)
              for side in ("local", "ray")]
    assert not frames[1].duplicated(["cell_key", "loop"]).any() and set(frames[1]["status"]) == {"ok"}
    same = ["cell_key", "task", "backend", "loop", "mode", "threads", "batch_size", "repeat", "seed", "dataset",
            "dataset_sha256", "n_samples", "batch_order_hash", "steps_per_window", "windows", "node"]
    pd.testing.assert_frame_equal(frames[0][same], frames[1][same], check_exact=True)
    assert set(frames[1]["node"]) == {HOST} and frames[1]["node_hardware"].notna().all()
    report = run_cli("report", tmp_path / "ray")
    assert report.returncode == 0, report.stderr


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.ray
@pytest.mark.xdist_group("ray")
@needs_ray
def test_a_killed_ray_worker_is_a_failed_row_and_the_rerun_resumes_without_duplicates(tmp_path, cluster):
    out = tmp_path / "out"
    args = ["run", "--task", "mnist-mlp", "--dataset", "synthetic-mnist", "--backend", "torch", "--seeds", "0,1,2",
            "--epochs", "3", "--limit-train", "2000", "--threads", "1", "--no-progress", "--out", str(out),
            "--executor", "ray", "--ray-address", cluster]
    proc = spawn([sys.executable, "-m", "dualbench.cli", *args])
    found = {}

    def a_cell_running():   # a dualbench worker whose parent is the Ray worker running the cell's task
        table = processes()
        for pid, ppid in our_workers("dualbench.worker").items():
            if ppid in table and table[ppid][1][:1] and table[ppid][1][0].startswith("ray::"):
                found.update(worker=pid, ray_worker=ppid)
                return True
        return False

    wait_for(a_cell_running, proc, 180, "a cell to start")
    os.kill(found["ray_worker"], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    frame = read_csv(out / "runs.csv", RUN_COLUMNS)
    failed = frame[frame["status"] == "failed"]
    assert len(failed) == 1 and failed["error"].iloc[0].startswith(f"Ray worker lost on node {HOST} mid-cell")
    assert failed["node"].iloc[0] == HOST
    assert finished_rows(frame)["cell_key"].nunique() == 2 and len(finished_rows(frame)) == 2 * 3
    time.sleep(1)
    assert found["worker"] not in our_workers("dualbench.worker")   # it died with its Ray worker

    rerun = run_ray_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming: 2 of 3 cells already finished" in rerun.stderr
    final = read_csv(out / "runs.csv", RUN_COLUMNS)
    done = finished_rows(final)
    assert done["cell_key"].nunique() == 3 and not done.duplicated(["cell_key", "epoch"]).any() and len(done) == 9


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.ray
@pytest.mark.xdist_group("ray")
@needs_ray
def test_sigterm_on_the_driver_cancels_the_cells_keeps_finished_rows_and_resumes(tmp_path, cluster):
    out = tmp_path / "out"
    args = ["run", "--task", "mnist-mlp", "--dataset", "synthetic-mnist", "--backend", "torch", "--seeds", "0,1,2",
            "--epochs", "2", "--limit-train", "1000", "--threads", "2", "--no-progress", "--out", str(out),
            "--executor", "ray", "--ray-address", cluster]
    csv_path = out / "runs.csv"
    proc = spawn([sys.executable, "-m", "dualbench.cli", *args])
    wait_for(lambda: csv_path.exists() and pd.read_csv(csv_path)["test_acc"].notna().sum() >= 1, proc, 180,
             "the first cell")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    first = read_csv(csv_path, RUN_COLUMNS)
    assert first["test_acc"].notna().sum() < 3 and len(first) == 2 * first["test_acc"].notna().sum()
    time.sleep(2)
    assert our_workers("dualbench.worker") == {}   # no cell goes on computing after the driver stopped

    rerun = run_ray_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    final = read_csv(csv_path, RUN_COLUMNS)
    assert final["cell_key"].nunique() == 3 and not final.duplicated(["cell_key", "epoch"]).any() and len(final) == 6


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.ray
@pytest.mark.xdist_group("ray")
@needs_ray
def test_a_different_dataset_on_the_node_is_a_failed_row_unless_the_driver_ships_it(tmp_path, cluster):
    """The driver's copy of synthetic-mnist differs from the node's (the cluster reads the tests' data cache)."""
    from dualbench.common.data.catalog import get_info
    from dualbench.common.data.files import dataset_sha256
    from dualbench.common.data.synth import write_synthetic
    driver_data = tmp_path / "driver-data"
    where = write_synthetic("synthetic-mnist", driver_data / "synthetic-mnist", n_train=1500)
    driver_sha = dataset_sha256(get_info("synthetic-mnist"), where)
    args = ["run", "--task", "mnist-mlp", "--dataset", "synthetic-mnist", "--backend", "torch", "--seeds", "0",
            "--epochs", "1", "--limit-train", "300", "--threads", "1", "--no-progress", "--executor", "ray",
            "--ray-address", cluster]
    env = {"DUALBENCH_DATA": str(driver_data)}
    proc = run_ray_cli(*args, "--out", tmp_path / "checked", env=env)
    assert proc.returncode == 1, proc.stderr
    row = read_csv(tmp_path / "checked" / "runs.csv", RUN_COLUMNS).iloc[0]
    assert row["status"] == "failed" and row["node"] == HOST
    assert row["error"].startswith(f"dataset 'synthetic-mnist' on node {HOST} ") and "not substituted" in row["error"]

    proc = run_ray_cli(*args, "--ship-data", "--out", tmp_path / "shipped", env=env)
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(tmp_path / "shipped" / "runs.csv", RUN_COLUMNS)
    assert set(rows["status"]) == {"ok"} and set(rows["dataset_sha256"]) == {driver_sha}
    assert "shipped by the driver" in rows["dataset_source"].iloc[0]
