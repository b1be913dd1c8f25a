"""dualbench bench: the plan (interleaving, keys, suites), resume, atomic appends, the worker's cells.

Nothing here asserts a speed: timings are measured by the command, not by tests.
"""
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dualbench import backends
from dualbench import bench as B
from dualbench.common.results import append_rows, read_csv
from dualbench.common.tasks import TASKS

ROOT = Path(__file__).resolve().parent.parent
TINY = replace(B.SUITES["default"], repeats=2, warmup=1, warmup_seconds=0.0, steps="2", windows=2, aa=False,
               window_seconds=0.01, ttt=False, tune=False, workloads=("train",))


def test_default_suite_takes_mnist_and_cifar_shaped_tasks_from_the_registry(monkeypatch):
    names = [t.name for t in B.suite_tasks(B.SUITES["default"])]
    assert names == list(B.suites.DEFAULT_TASKS) and "mnist-lenet" in names and "cifar2-net" in names
    by_shape = replace(B.SUITES["default"], tasks=())     # a suite without a task list takes them by shape
    names = [t.name for t in B.suite_tasks(by_shape)]
    assert all(tuple(TASKS[n].model.input_shape) in (B.MNIST_LIKE, B.CIFAR_LIKE) for n in names)
    assert not any(t.startswith("food11") for t in names)
    # a CIFAR-shaped task added to the registry joins without touching the suite
    base = TASKS["mnist-lenet"]
    new = replace(base, name="cifar2-probe", model=replace(base.model, input_shape=(3, 32, 32)))
    monkeypatch.setitem(TASKS, "cifar2-probe", new)
    assert "cifar2-probe" in [t.name for t in B.suite_tasks(by_shape)]
    assert [t.name for t in B.suite_tasks(replace(B.SUITES["default"], name="cifar2", tasks=()))] == \
        [t.name for t in TASKS.values() if t.name.startswith("cifar2")]


def test_unknown_task_names_are_skipped_with_a_note(capsys):
    tasks = B.suite_tasks(B.SUITES["default"], "mnist-mlp,no-such-task")
    assert [t.name for t in tasks] == ["mnist-mlp"]
    assert "no-such-task" in capsys.readouterr().err
    with pytest.raises(B.UserError):
        B.suite_tasks(B.SUITES["default"], "no-such-task")


def test_plan_interleaves_backends_and_alternates_who_goes_first():
    tasks = [TASKS["mnist-mlp"], TASKS["mnist-lenet"]]
    suite = replace(TINY, ttt=True, batch_sizes=(None, 32))
    groups = B.plan(suite, tasks, ["torch", "paddle"], [1, 2], "run")
    assert [(g["group"], g["repeat"]) for g in groups] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    firsts = []
    for g in groups:
        cells = g["cells"]
        pairs = [cells[i:i + 2] for i in range(0, len(cells), 2)]
        for a, b in pairs:     # each (task, config) runs once per backend, back to back
            assert {a["backend"], b["backend"]} == {"torch", "paddle"}
            assert (a["task"], a["batch_size"], a["kind"]) == (b["task"], b["batch_size"], b["kind"])
            firsts.append(a["backend"])
    assert firsts.count("torch") == firsts.count("paddle")     # order effects cancel
    kinds = {(c["task"], c["kind"]) for g in groups for c in g["cells"]}
    assert ("mnist-lenet", "ttt") in kinds and ("mnist-mlp", "ttt") not in kinds   # only tasks with a target
    keys = [k for g in groups for c in g["cells"] for k in c["keys"].values()]
    assert len(keys) == len(set(keys))
    assert {c["batch_size"] for g in groups for c in g["cells"] if c["kind"] == "speed"} == {200, 64, 32}


def test_cell_keys_are_deterministic_and_change_with_any_setting():
    tasks = [TASKS["mnist-mlp"]]
    a = B.plan(TINY, tasks, ["torch", "paddle"], [2], "run-a")
    b = B.plan(TINY, tasks, ["torch", "paddle"], [2], "run-b")     # run ids differ: keys must not
    assert [c["keys"] for g in a for c in g["cells"]] == [c["keys"] for g in b for c in g["cells"]]
    c = B.plan(replace(TINY, windows=3), tasks, ["torch", "paddle"], [2], "run-a")
    assert not set(a[0]["cells"][0]["keys"].values()) & set(c[0]["cells"][0]["keys"].values())


def test_resume_skips_finished_loops_and_cells():
    groups = B.plan(TINY, [TASKS["mnist-mlp"]], ["torch", "paddle"], [2], "run")
    first = groups[0]["cells"][0]
    done = {first["keys"]["engine"], first["keys"]["bare"], groups[0]["cells"][1]["keys"]["engine"]}
    todo = B.pending_cells(groups, done)
    cells = [c for g in todo for c in g["cells"]]
    assert first["keys"]["engine"] not in [k for c in cells for k in c["keys"].values() if k in c["loops"]]
    assert len(cells) == 3                          # 4 cells, one fully done
    assert cells[0]["loops"] == ["bare"]            # half-done cell: only the missing loop runs
    all_done = {k for g in groups for c in g["cells"] for k in c["keys"].values()}
    assert B.pending_cells(groups, all_done) == []


def write_first_stage(path, groups, ratios):
    """Engine rows of a first-stage plan with the given torch/paddle ratio per task and repeat."""
    rows = []
    for g in groups:
        for c in g["cells"]:
            sps = 1000.0 * (ratios[c["task"]][c["repeat"] - 1] if c["backend"] == "torch" else 1.0)
            rows.append({"cell_key": c["keys"]["engine"], "suite": c["suite"], "task": c["task"],
                         "backend": c["backend"], "loop": "engine", "repeat": c["repeat"], "status": "ok",
                         "samples_per_s": sps, "batch_size": c["batch_size"], "threads": c["threads"]})
    append_rows(path, rows, B.BENCH_COLUMNS)


def test_second_stage_plans_pairs_only_for_wide_configurations(tmp_path):
    from dualbench.common.stats import pairs_needed
    import numpy as np
    suite = replace(TINY, repeats=6, ci_target=0.03, max_repeats=40)
    tasks = [TASKS["mnist-mlp"], TASKS["mnist-lenet"]]
    first = B.plan(suite, tasks, ["torch", "paddle"], [2], "run")
    narrow = [1.50, 1.51, 1.49, 1.50, 1.52, 1.50]
    wide = [3.0, 3.4, 2.9, 3.6, 3.1, 3.3]
    path = tmp_path / "bench.csv"
    write_first_stage(path, first, {"mnist-mlp": narrow, "mnist-lenet": wide})
    extra = B.second_stage_pairs(path, first, suite)
    config = ("mnist-lenet", "speed", 64, "equal", "eager|fp32|t2|")
    assert list(extra) == [config]                                   # the narrow task needs nothing more
    assert extra[config] == pairs_needed(np.log(wide), 0.03, 40) > 6
    groups = B.plan(suite, tasks, ["torch", "paddle"], [2], "run", extra=extra)
    assert [g["repeat"] for g in groups] == list(range(7, extra[config] + 1))
    for g in groups:          # one pair per repeat, the engine loop only, no time to target
        assert [(c["task"], c["kind"], c["loops"]) for c in g["cells"]] == [("mnist-lenet", "speed", ["engine"])] * 2
        assert {c["backend"] for c in g["cells"]} == {"torch", "paddle"}
    keys = {k for g in groups for c in g["cells"] for k in c["keys"].values()}
    assert not keys & {k for g in first for c in g["cells"] for k in c["keys"].values()}
    assert B.second_stage_pairs(path, first, replace(suite, max_repeats=10))[config] == 10
    assert B.second_stage_pairs(path, first, replace(suite, ci_target=0.5)) == {}
    # rows of other runs in the same file (another suite name: other keys) do not count
    other = B.plan(replace(suite, name="other"), tasks, ["torch", "paddle"], [2], "run")
    write_first_stage(path, other, {"mnist-mlp": wide, "mnist-lenet": wide})
    assert B.second_stage_pairs(path, first, suite) == extra


def test_execute_starts_no_group_expected_to_end_past_the_deadline(tmp_path):
    import time
    groups = B.plan(TINY, [TASKS["mnist-mlp"]], ["torch", "paddle"], [1], "run")
    durations = {("mnist-mlp", "torch", "speed"): [5.0], ("mnist-mlp", "paddle", "speed"): [5.0]}
    problems, left = B.execute(groups, tmp_path / "bench.csv", progress=False, durations=durations,
                               deadline=time.perf_counter() + 10)      # a group is expected to take 13 s
    assert problems == [] and left == groups and not (tmp_path / "bench.csv").exists()
    assert B.cell_seconds(durations, groups[0]["cells"][0]) == 5.0
    assert B.cell_seconds({}, groups[0]["cells"][0]) == 2.0


def test_tuning_and_best_stages_start_no_group_past_the_budget(tmp_path, capsys):
    from dualbench.bench.cli import run_stage
    groups = B.plan(TINY, [TASKS["mnist-mlp"]], ["torch", "paddle"], [1], "run", stage="best",
                    chosen={"mnist-mlp": {n: {"threads": 1, "mode": "eager", "precision": "fp32", "knobs": {}}
                                          for n in ("torch", "paddle")}})
    assert run_stage(groups, tmp_path / "bench.csv", False, {}, "each at its best",
                     deadline=time.perf_counter() + 1) == []
    assert not (tmp_path / "bench.csv").exists()
    assert "each at its best: time budget reached; repeat(s) 1, 2 not started (rerun the command to add them)" in \
        capsys.readouterr().err


def test_ci_target_options_are_checked(tmp_path):
    from tests.conftest import run_cli
    for option, value in (("--ci-target", "150"), ("--max-repeats", "0"), ("--budget-minutes", "-1")):
        out = run_cli("bench", "--tasks", "mnist-mlp", option, value, "--out", tmp_path)
        assert out.returncode != 0 and option in out.stderr and "Traceback" not in out.stderr
        assert not (tmp_path / "bench.csv").exists()


def test_atomic_append_leaves_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "bench.csv"
    row = {c: None for c in B.BENCH_COLUMNS}
    append_rows(path, [{**row, "cell_key": "a", "task": "t"}], B.BENCH_COLUMNS)
    before = path.read_bytes()

    def crash(src, dst):
        raise KeyboardInterrupt   # Ctrl-C at the worst moment: after writing the temp file, before the rename
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        append_rows(path, [{**row, "cell_key": "b", "task": "t"}], B.BENCH_COLUMNS)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["bench.csv"]    # no temp file left behind
    append_rows(path, [{**row, "cell_key": "b", "task": "t"}], B.BENCH_COLUMNS)
    assert list(read_csv(path, B.BENCH_COLUMNS)["cell_key"]) == ["a", "b"]
    assert B.done_keys(path) == {"a", "b"}


def test_amp_on_cpu_is_refused_with_one_line(tmp_path):
    from tests.conftest import run_cli
    out = run_cli("bench", "--tasks", "mnist-mlp", "--amp", "--out", tmp_path)
    assert out.returncode == 2
    assert "GPU only" in out.stderr and len(out.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# The worker's cells, in this process, with both backends (the `backend` fixture skips a missing one)


def worker_cell(backend_name, task="mnist-mlp", mode="eager", kind="speed", loops=("engine", "bare"), **kw):
    suite = replace(TINY, ttt=True, **kw)
    groups = B.plan(suite, [TASKS[task]], [backend_name], [1], "test-run", samples=512)
    cell = next(c for c in groups[0]["cells"] if c["kind"] == kind)
    cell = {**cell, "mode": mode}
    if kind == "speed":
        cell["loops"] = list(loops)
    cell["keys"] = {loop: B.cell_key(cell, loop) for loop in cell["loops"]}
    return cell


def run_in_process(backend, cell):
    from dualbench.bench.worker import run_bench_cell
    speed = backends.load(backend.NAME, "speed")
    return run_bench_cell(cell, backend, speed, {})


def test_speed_cell_rows(backend):
    cell = worker_cell(backend.NAME)
    rows = run_in_process(backend, cell)
    assert [r["loop"] for r in rows] == ["engine", "bare"]
    assert set(rows[0]) <= set(B.BENCH_COLUMNS)
    for row in rows:
        assert row["cell_key"] == cell["keys"][row["loop"]]
        assert row["backend"] == backend.NAME and row["threads"] == 1 and row["batch_size"] == 200
        assert row["samples_per_s"] > 0 and row["steps_per_window"] == 2 and row["windows"] == 2
        assert len(row["window_ms_per_step"].split(";")) == 2
        assert row["peak_mem_mb"] > 0 and row["peak_mem_kind"] == "rss"
        assert row["cpu_count"] >= 1 and row["load_avg"] >= 0
        assert row["dataset"] == "random-uint8-n512" and row["synthetic"] is True
        assert row["epoch_samples"] == 50000 and row["epoch_seconds"] > 0    # MNIST 60k less the 1/6 val split
    engine, bare = rows
    assert 0 <= engine["reader_share"] < 1 and engine["reader_ms_per_step"] > 0
    assert bare["reader_ms_per_step"] == 0
    assert engine["batch_order_hash"] == bare["batch_order_hash"]
    assert math.isnan(engine["samples_per_s_lo"])      # 2 windows: no 95% order-statistic CI exists


def test_speed_cells_of_both_backends_see_the_same_data_and_order():
    from dualbench import backends
    if not all(backends.is_installed(n) for n in backends.BACKENDS):
        pytest.skip("needs both frameworks")
    rows = [run_in_process(backends.load(n), worker_cell(n, loops=("engine",)))[0] for n in backends.BACKENDS]
    assert rows[0]["dataset_sha256"] == rows[1]["dataset_sha256"] and len(rows[0]["dataset_sha256"]) == 64
    from dualbench.common.data.split import epoch_batches, order_hash
    expected = order_hash(epoch_batches(512, 200, 0, 1, True))
    assert rows[0]["batch_order_hash"] == rows[1]["batch_order_hash"] == expected


def test_compiled_mode_runs_with_paddle_to_static():
    from dualbench import backends
    if not backends.is_installed("paddle"):
        pytest.skip("paddle not installed")
    paddle_backend = backends.load("paddle")
    rows = run_in_process(paddle_backend, worker_cell("paddle", task="mnist-lenet", mode="compiled"))
    assert [r["mode"] for r in rows] == ["compiled", "compiled"] and rows[0]["samples_per_s"] > 0


def test_torch_compile_wraps_the_model_and_keeps_its_parameters():
    from dualbench import backends
    if not backends.is_installed("torch"):
        pytest.skip("torch not installed")
    torch_backend = backends.load("torch")
    from dualbench.backends.torch import speed
    task = TASKS["mnist-mlp"]
    state = torch_backend.train.make_state(task, torch_backend.models.build_model(task.model), torch_backend.device.resolve_device("cpu"))
    params = [id(p) for p in state.model.parameters()]
    speed.compile_model(state)
    assert type(state.model).__name__ == "OptimizedModule"       # compiled lazily at the first call
    assert [id(p) for p in state.model.parameters()] == params


def test_amp_step_runs_on_cpu(backend):
    """The AMP code path (autocast; GradScaler only on GPU) on CPU: torch bfloat16, paddle a no-op cast."""
    import numpy as np
    speed = backends.load(backend.NAME, "speed")
    task = TASKS["mnist-lenet"]
    dev, _ = backend.device.configure(1, "cpu")
    state = backend.train.make_state(task, backend.models.build_model(task.model), dev)
    assert speed.make_scaler(dev, True) is None
    step = speed.make_step(state, amp=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 28, 28)).astype("float32")
    y = rng.integers(0, 10, 8).astype("int64")
    (xb, yb), = speed.preload(x, y, [np.arange(8)], dev)
    loss, out = step(state, xb, yb)
    assert math.isfinite(float(loss)) and tuple(out.shape) == (8, 10)
    assert speed.make_step(state, amp=False) is backend.train.train_step


def test_time_to_target_cell(backend):
    cell = worker_cell(backend.NAME, task="mnist-lenet", kind="ttt")
    assert cell["dataset"] == "synthetic-mnist"        # no real MNIST in the test cache: the synthetic twin
    row, = run_in_process(backend, {**cell, "max_epochs": 2})
    assert row["loop"] == "ttt" and row["target_accuracy"] == TASKS["mnist-lenet"].target_accuracy
    assert 1 <= row["ttt_epochs"] <= 2 and 0 <= row["ttt_acc"] <= 1 and row["epoch_seconds"] > 0
    assert row["ttt_reached"] == (row["ttt_acc"] >= row["target_accuracy"])
    assert row["ttt_reached"] == math.isfinite(row["ttt_seconds"])


# ---------------------------------------------------------------------------------------------
# End to end through the CLI: both backends in worker processes, interrupted, resumed


def tiny_bench_args(out):
    return ["bench", "--tasks", "mnist-linear-mse", "--repeats", "2", "--ci-target", "0", "--windows", "2", "--steps", "2",
            "--warmup", "1", "--warmup-seconds", "0", "--threads", "1", "--no-ttt", "--no-progress",
            "--no-tune", "--mode", "train", "--no-aa", "--out", out]


@pytest.mark.slow
@pytest.mark.e2e
def test_bench_cli_interrupted_by_sigterm_resumes(tmp_path):
    """Both backends in worker processes, killed after the first cell: the CSV stays readable, a rerun
    does only the rest, and a third run has nothing to do."""
    import signal
    import subprocess
    import sys
    import time
    from dualbench import backends
    from tests.conftest import ROOT as root
    from tests.conftest import run_cli
    if not all(backends.is_installed(n) for n in backends.BACKENDS):
        pytest.skip("needs both frameworks")
    csv_path = tmp_path / "bench.csv"
    proc = subprocess.Popen([sys.executable, "-m", "dualbench.cli", *tiny_bench_args(tmp_path)], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (csv_path.exists() and csv_path.stat().st_size > 0):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (143, 0), err        # 0 only if it had already finished
    partial = read_csv(csv_path, B.BENCH_COLUMNS)
    assert 2 <= len(partial) <= 8 and partial["cell_key"].is_unique
    out = run_cli(*tiny_bench_args(tmp_path))
    assert out.returncode == 0, out.stderr
    full = read_csv(csv_path, B.BENCH_COLUMNS)
    assert len(full) == 2 * 2 * 2 and full["cell_key"].is_unique      # repeats x backends x (engine, bare)
    assert full.iloc[:len(partial)]["cell_key"].tolist() == partial["cell_key"].tolist()
    assert set(full["backend"]) == {"torch", "paddle"} and set(full["loop"]) == {"engine", "bare"}
    assert (full.groupby("backend")["framework_version"].nunique() == 1).all()
    assert "torch/paddle" in out.stdout and "resuming" in out.stderr
    again = run_cli(*tiny_bench_args(tmp_path))        # nothing left to do: no new rows
    assert again.returncode == 0, again.stderr
    assert "resuming, 4 of 4 cells already" in again.stderr
    assert read_csv(csv_path, B.BENCH_COLUMNS).equals(full)
    time.sleep(0.2)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bench.csv.")]   # no temp files


@pytest.mark.slow
@pytest.mark.e2e
def test_second_stage_end_to_end_adds_engine_pairs_and_resumes(tmp_path):
    """Two tiny first-stage pairs cannot give a ratio CI within +-0.01%: the second stage adds repeat 3
    (engine only, both backends), the report counts 3 pairs, and a rerun has nothing left to add."""
    from dualbench import backends
    from tests.conftest import run_cli
    if not all(backends.is_installed(n) for n in backends.BACKENDS):
        pytest.skip("needs both frameworks")
    args = tiny_bench_args(tmp_path)
    args[args.index("--ci-target") + 1] = "0.01"
    args += ["--max-repeats", "3"]
    out = run_cli(*args)
    assert out.returncode == 0, out.stderr
    assert "second stage, 1 configuration(s) wider than" in out.stderr and "mnist-linear-mse speed b100 equal 3" in out.stderr
    frame = read_csv(tmp_path / "bench.csv", B.BENCH_COLUMNS)
    third = frame[frame["repeat"] == 3]
    assert sorted(third["backend"]) == ["paddle", "torch"] and set(third["loop"]) == {"engine"}
    assert len(frame) == 2 * 2 * 2 + 2 and frame["cell_key"].is_unique
    assert "Ratio CIs within ±3%" in out.stdout
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert len(read_csv(tmp_path / "bench.csv", B.BENCH_COLUMNS)) == len(frame)


def test_old_schema_bench_csv_is_upgraded_on_append(tmp_path):
    """A bench.csv written before the status/error columns existed: read as all ok, and the next append
    rewrites it in today's layout with the old rows intact."""
    first_new = B.BENCH_COLUMNS.index("status")       # every column since then was appended after it
    old_columns = B.BENCH_COLUMNS[:first_new]
    path = tmp_path / "bench.csv"
    old = [{"cell_key": f"k{r}", "suite": "default", "task": "mnist-mlp", "backend": "torch", "loop": "engine",
            "threads": 2, "batch_size": 200, "repeat": r, "samples_per_s": 1000.5 + r, "device": "cpu",
            "window_ms_per_step": "1.5000;1.2500", "timestamp": f"2025-01-01T00:00:0{r}+00:00"} for r in (1, 2)]
    import pandas as pd
    pd.DataFrame(old).reindex(columns=old_columns).to_csv(path, index=False)
    before = pd.read_csv(path)
    assert B.done_keys(path) == {"k1", "k2"}                         # empty status reads as ok: not rerun
    append_rows(path, [{"cell_key": "k3", "task": "mnist-mlp", "backend": "paddle", "loop": "engine",
                        "repeat": 1, "status": "failed", "error": "RuntimeError: boom"}], B.BENCH_COLUMNS)
    assert path.read_text().splitlines()[0] == ",".join(B.BENCH_COLUMNS)
    after = read_csv(path, B.BENCH_COLUMNS)
    pd.testing.assert_frame_equal(after.iloc[:2][old_columns], before, check_dtype=False)
    assert after["status"].iloc[:2].isna().all() and after["status"].iloc[2] == "failed"
    assert B.done_keys(path) == {"k1", "k2"}                         # the failed cell is retried


def test_published_bench_csv_still_reads_and_reports(tmp_path):
    """The committed results/cpu/bench.csv resumes, reports (every task has a ratio or is listed as
    failed/diverged) and can be appended to."""
    import shutil
    from dualbench.report import problem_table, speed_summary
    published = ROOT / "results" / "cpu" / "bench.csv"
    frame = read_csv(published, B.BENCH_COLUMNS)
    assert len(B.done_keys(published)) == frame["cell_key"].nunique()
    summary = speed_summary(read_csv(published))
    problems = problem_table(read_csv(published))
    listed = set() if problems is None else set(problems["task"])
    assert len(summary) and all(pairs >= 1 or task in listed for task, pairs in zip(summary["task"], summary["pairs"]))
    copy = tmp_path / "bench.csv"
    shutil.copy(published, copy)
    append_rows(copy, [{"cell_key": "new", "task": "mnist-mlp", "status": "ok"}], B.BENCH_COLUMNS)
    assert list(read_csv(copy, B.BENCH_COLUMNS)["cell_key"][:-1]) == list(frame["cell_key"])


def test_worker_holds_one_dataset_at_a_time_and_regenerates_it_identically():
    import numpy as np

    from dualbench.bench.workload import random_data
    from dualbench.common.tasks import get_task
    cache = {}
    x1, y1, meta1 = random_data(get_task("mnist-lenet"), 500, 0, cache)
    random_data(get_task("cifar2-net"), 300, 0, cache)
    assert len(cache) == 1   # the MNIST-shaped arrays were dropped before the CIFAR ones were made
    x2, y2, meta2 = random_data(get_task("mnist-lenet"), 500, 0, cache)
    assert len(cache) == 1 and np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert meta1["dataset_sha256"] == meta2["dataset_sha256"]


def test_pool_bookkeeping_without_workers(tmp_path):
    """Which worker a cell needs, how a dead one is described, and what append_reply writes."""
    from dualbench.bench.pool import append_reply, death_line, run_alone, worker_key
    assert worker_key({"backend": "paddle", "threads": "2", "knobs": "onednn=on"})[:2] == ("paddle", 2)
    assert worker_key({"backend": "paddle", "threads": 2, "knobs": "onednn=on"}) != \
        worker_key({"backend": "paddle", "threads": 2, "knobs": "onednn=off"})      # oneDNN is set at import
    assert death_line(-9, ["", "Killed"], {"batch_size": 64}).startswith(
        "worker killed by signal 9 (possibly out of memory at batch size 64")
    assert death_line(3, ["ImportError: no paddle", ""], {}) == "worker exited with code 3: ImportError: no paddle"

    class FakeWorker:
        def __init__(self):
            self.state = "running"

        def pause(self):
            self.state = "stopped"

        def resume(self):
            self.state = "running"

        def run(self, cell):
            return {"ran": cell["task"], "others": [w.state for w in workers.values() if w is not self]}

    workers = {"a": FakeWorker(), "b": FakeWorker(), "c": FakeWorker()}
    assert run_alone(workers, "b", {"task": "t"}) == {"ran": "t", "others": ["stopped", "stopped"]}

    groups = B.plan(TINY, [TASKS["mnist-mlp"]], ["torch", "paddle"], [1], "run")
    cell = groups[0]["cells"][0]
    problems, durations, csv_path = [], {}, tmp_path / "bench.csv"

    class Bar:
        def __init__(self):
            self.lines, self.n = [], 0

        def write(self, line):
            self.lines.append(line)

        def update(self, n):
            self.n += n
    bar = Bar()
    append_reply(csv_path, cell, {"error": "MemoryError: x", "diverged": False}, 1.0, durations, problems, bar,
                 node={"node": "n1"}, where=" on n1")
    rows = read_csv(csv_path)
    assert list(rows.status) == ["failed"] * len(cell["loops"]) and set(rows.node) == {"n1"}
    assert problems[0][1:] == ("failed", "MemoryError: x") and "failed on n1: MemoryError" in bar.lines[0]
    append_reply(csv_path, cell, {"rows": [{"cell_key": "k", "loop": "engine", "status": "ok"}]}, 2.5, durations,
                 problems, bar)
    assert durations == {("mnist-mlp", cell["backend"], "speed"): [2.5]} and bar.n == 2


# ---------------------------------------------------------------------------------------------
# A/A pairs: each framework against itself, the machine's noise floor


def test_aa_pairs_follow_the_smallest_and_largest_tasks_pair_in_the_equal_stage_only():
    from dualbench.bench.planning import aa_tasks
    from dualbench.bench.pool import worker_key
    tasks = [TASKS[n] for n in ("mnist-mlp", "mnist-conv-ce", "mnist-linear-mse", "mnist-lenet")]
    assert aa_tasks(tasks) == ["mnist-linear-mse", "mnist-conv-ce"]     # by multiply-adds per step
    suite = replace(TINY, aa=True, repeats=4)
    groups = B.plan(suite, tasks, ["torch", "paddle"], [2], "run")
    for g in groups:
        cells = g["cells"]
        aa = [i for i, c in enumerate(cells) if c["stage"] == "aa"]
        assert len(aa) == 2 * 2 * 2                     # 2 tasks x 2 frameworks x sides a and b
        for task in ("mnist-linear-mse", "mnist-conv-ce"):
            start = next(i for i, c in enumerate(cells) if c["task"] == task and c["stage"] == "equal")
            pair, after = cells[start:start + 2], cells[start + 2:start + 6]   # right after its torch/paddle pair
            assert {c["backend"] for c in pair} == {"torch", "paddle"} and {c["stage"] for c in pair} == {"equal"}
            assert [(c["task"], c["stage"], c["backend"]) for c in after] == \
                [(task, "aa", "torch")] * 2 + [(task, "aa", "paddle")] * 2
            for a, b in (after[:2], after[2:]):
                assert {a["aa_side"], b["aa_side"]} == {"a", "b"} and a["loops"] == b["loops"] == ["engine"]
                assert (a["mode"], a["threads"], a["knobs"], a["batch_size"], a["windows"], a["samples"]) == \
                    (b["mode"], b["threads"], b["knobs"], b["batch_size"], b["windows"], b["samples"])
                assert len({worker_key(a), worker_key(b), worker_key(pair[0]), worker_key(pair[1])}) == 4
    firsts = [c["aa_side"] for g in groups for c in g["cells"] if c["stage"] == "aa"][::2]
    assert firsts.count("a") == firsts.count("b")   # which side goes first alternates, like torch/paddle
    keys = [k for g in groups for c in g["cells"] for k in c["keys"].values()]
    assert len(keys) == len(set(keys))
    plain = B.plan(replace(suite, aa=False), tasks, ["torch", "paddle"], [2], "run")   # old keys resume
    assert [c["keys"] for g in plain for c in g["cells"]] == \
        [c["keys"] for g in groups for c in g["cells"] if c["stage"] != "aa"]
    for stage in ("tune", "best"):
        chosen = {t.name: {n: {"threads": 2, "mode": "eager", "precision": "fp32", "knobs": {}}
                           for n in ("torch", "paddle")} for t in tasks}
        other = B.plan(suite, tasks, ["torch", "paddle"], [2], "run", stage=stage, chosen=chosen)
        assert not any(c["stage"] == "aa" for g in other for c in g["cells"])
    second = B.plan(suite, tasks, ["torch", "paddle"], [2], "run", extra={B.config_id(groups[0]["cells"][0]): 6})
    assert not any(c["stage"] == "aa" for g in second for c in g["cells"])
    pair = B.suites.ModelPair("m", "a.py:t", "a.py:p", (3, 8, 8), 2, 4)
    assert aa_tasks([pair]) == ["m"]
    pair_cells = [c for g in B.plan(suite, [pair], ["torch", "paddle"], [2], "run") for c in g["cells"]]
    assert {c["loops"][0] for c in pair_cells if c["stage"] == "aa"} == {"bare"}   # a model pair's only loop


def test_aa_cells_place_with_their_tasks_equal_configuration_on_ray():
    pytest.importorskip("ray")
    from dualbench.bench.on_ray import placement_key, shard_groups
    suite = replace(TINY, aa=True)
    groups = B.plan(suite, [TASKS["mnist-linear-mse"], TASKS["mnist-mlp"]], ["torch", "paddle"], [2], "run")
    cells = [c for g in groups for c in g["cells"]]
    equal = {c["task"]: placement_key(c) for c in cells if c["stage"] == "equal"}
    assert all(placement_key(c) == equal[c["task"]] for c in cells if c["stage"] == "aa")
    shards = shard_groups(groups, {equal["mnist-linear-mse"]: "n1", equal["mnist-mlp"]: "n2"})
    assert {c["task"] for s in shards["n1"] for c in s["cells"]} == {"mnist-linear-mse"}
    assert sum(c["stage"] == "aa" for s in shards["n1"] for c in s["cells"]) == 2 * 2 * 2


def aa_first_stage_rows(groups, torch_over_paddle, aa_noise, rng):
    """Engine rows for a first-stage plan: torch/paddle pairs at the given ratio per task, every cell's speed
    multiplied by a pair's shared drift and its own exp(N(0, aa_noise)) (what the machine does)."""
    rows = []
    for g in groups:
        drift = float(np.exp(rng.normal(0, 0.02)))
        for c in g["cells"]:
            sps = 1000.0 * drift * float(np.exp(rng.normal(0, aa_noise)))
            if c["backend"] == "torch" and c["stage"] != "aa":
                sps *= torch_over_paddle[c["task"]]
            rows.append({"cell_key": c["keys"]["engine"], "suite": c["suite"], "task": c["task"], "backend": c["backend"],
                         "loop": "engine", "repeat": c["repeat"], "status": "ok", "samples_per_s": sps,
                         "batch_size": c["batch_size"], "threads": c["threads"], "stage": c["stage"],
                         "aa_side": c.get("aa_side"), "device": c["device"], "mode": c["mode"],
                         "precision": c["precision"], "dataset": f"random-uint8-n{c['samples']}"})
    return rows



def test_a_configuration_that_cannot_reach_the_target_in_the_time_left_gets_no_more_pairs(tmp_path, monkeypatch):
    from dualbench.bench import cli
    from dualbench.bench.planning import MACHINE_NOISE, NO_FIT, aa_spread, first_stage_pairs, second_stage_skips
    suite = replace(TINY, aa=True, repeats=5, ci_target=0.03, max_repeats=40, budget_seconds=60)
    tasks = [TASKS["mnist-linear-mse"], TASKS["mnist-mlp"], TASKS["mnist-conv-ce"]]
    first = B.plan(suite, tasks, ["torch", "paddle"], [2], "run")
    path = tmp_path / "bench.csv"
    rows = aa_first_stage_rows(first, {"mnist-linear-mse": 1.5, "mnist-mlp": 1.2, "mnist-conv-ce": 3.0},
                               0.10, np.random.default_rng(3))
    wild = [r for r in rows if r["task"] == "mnist-mlp" and r["backend"] == "torch"]
    for r, factor in zip(wild, (1.0, 8.0, 0.2, 5.0, 0.1)):       # far noisier than the machine's A/A pairs
        r["samples_per_s"] *= factor
    append_rows(path, rows, B.BENCH_COLUMNS)
    spread, df = aa_spread(path, first)
    assert 0.05 < spread < 0.2 and df == 4 * 4                    # 4 A/A configurations of 5 pairs
    extra = B.second_stage_pairs(path, first, suite)
    by_task = {config[0]: config for config in extra}
    assert set(by_task) == set(t.name for t in tasks) and extra[by_task["mnist-mlp"]] == 40   # all wider than 3%
    pairs, seconds = first_stage_pairs(path, first), {config: 2.0 for config in extra}

    def skips(left, floor=(spread, df)):
        return {config[0]: why for config, (why, _, _) in second_stage_skips(extra, pairs, floor, seconds, left, 0.03).items()}
    # at the A/A spread, needing more than 100 pairs: not even 200 s would do; mnist-mlp's spread is its own
    assert skips(20) == {"mnist-linear-mse": MACHINE_NOISE, "mnist-conv-ce": MACHINE_NOISE, "mnist-mlp": NO_FIT}
    assert skips(200) == {"mnist-linear-mse": MACHINE_NOISE, "mnist-conv-ce": MACHINE_NOISE}   # 35 more pairs fit
    assert skips(1e6) == {}
    assert skips(20, (float("nan"), 0)) == {t: NO_FIT for t in by_task} and skips(200, (float("nan"), 0)) == {}
    needed, fit = second_stage_skips(extra, pairs, (spread, df), seconds, 20, 0.03)[by_task["mnist-conv-ce"]][1:]
    assert needed > 5 + 100 and fit == 10

    planned = []
    monkeypatch.setattr(cli, "execute", lambda groups, *a, **k: (planned.extend(groups), ([], []))[1])
    cli.second_stage(first, suite, tasks, ["torch", "paddle"], [2], "run", 0, 10000, None, path, {},
                     time.perf_counter() + 200, False)
    assert {c["task"] for g in planned for c in g["cells"]} == {"mnist-mlp"}    # the only one that gets pairs
    decisions = read_csv(tmp_path / "second_stage.csv").set_index("task")
    assert decisions.loc["mnist-linear-mse", "decision"] == "machine noise"
    assert decisions.loc["mnist-mlp", "decision"] == "added" and decisions.loc["mnist-mlp", "pairs_planned"] == 40

    from dualbench.report import build_report
    text = build_report(tmp_path, plots=False).read_text()

    def row(task):
        return next(line for line in text.splitlines() if line.startswith(f"| {task} | cpu, eager"))
    needed, fit = (int(decisions.loc["mnist-conv-ce", c]) for c in ("pairs_needed", "pairs_fit"))
    assert f"no second stage: needs {needed} pairs at the machine's noise; {fit} fit in the time left" in row("mnist-conv-ce")
    assert "second stage: 40 pairs planned, 5 ran in the time budget" in row("mnist-mlp")
    planned.clear()      # the same with 20 s left: mnist-mlp's 35 pairs (2 s each, as estimated) do not fit either
    cli.second_stage(first, suite, tasks, ["torch", "paddle"], [2], "run", 0, 10000, None, path, {},
                     time.perf_counter() + 20, False)
    assert planned == []
    text = build_report(tmp_path, plots=False).read_text()
    assert "no second stage: 40 pairs planned (spread ±" in row("mnist-mlp") and "fit in the time left" in row("mnist-mlp")


@pytest.mark.slow
def test_the_two_sides_of_an_aa_pair_run_in_two_worker_processes(tmp_path):
    """Through the pool: per repeat the torch cell and the two A/A sides each ran in a process of its own
    (worker_pid), and the report counts the processes."""
    if not backends.is_installed("torch"):
        pytest.skip("needs torch")
    suite = replace(TINY, aa=True, bare=False, repeats=1)
    groups = B.plan(suite, [TASKS["mnist-linear-mse"]], ["torch"], [1], "run", samples=512)
    problems, left = B.execute(groups, tmp_path / "bench.csv", progress=False)
    assert problems == [] and left == []
    frame = read_csv(tmp_path / "bench.csv", B.BENCH_COLUMNS)
    assert list(frame["aa_side"].fillna("-")) == ["-", "a", "b"]
    assert frame["worker_pid"].nunique() == 3 and os.getpid() not in set(frame["worker_pid"])  # torch, a, b
    from dualbench.report.speed import aa_pairs, aa_summary, with_settings
    aa = aa_summary(aa_pairs(with_settings(read_csv(tmp_path / "bench.csv")))).iloc[0]
    assert aa["processes"] == 2 and aa["two_processes"] and aa["pairs"] == 1


@pytest.mark.slow
@pytest.mark.e2e
def test_bench_cli_prints_the_floor_and_forms_no_ratio_from_aa_rows(tmp_path):
    """The command with its A/A pairs on: the rows of both sides, in processes of their own, the floor on
    the terminal and in the report, and the torch/paddle ratio over its own 2 pairs only."""
    from tests.conftest import run_cli
    if not all(backends.is_installed(n) for n in backends.BACKENDS):
        pytest.skip("needs both frameworks")
    args = [a for a in tiny_bench_args(tmp_path) if a != "--no-aa"]
    out = run_cli(*args)
    assert out.returncode == 0, out.stderr
    frame = read_csv(tmp_path / "bench.csv", B.BENCH_COLUMNS)
    aa = frame[frame["stage"] == "aa"]
    assert len(aa) == 2 * 2 * 2 and set(aa["loop"]) == {"engine"} and set(aa["aa_side"]) == {"a", "b"}
    for _, rows in aa.groupby(["repeat", "backend"]):
        assert rows["worker_pid"].nunique() == 2
    assert not set(aa["worker_pid"]) & set(frame.loc[frame["stage"] == "equal", "worker_pid"])
    assert "Machine noise floor (suite default" in out.stdout and "8 A/A pairs" not in out.stdout
    assert "4 A/A pairs on mnist-linear-mse" in out.stdout
    assert run_cli("report", tmp_path, "--no-plots").returncode == 0
    summary = pd.read_csv(tmp_path / "speed_summary.csv")
    assert list(summary["pairs"]) == [2] and list(summary["stage"]) == ["equal"]
    assert "### Machine noise: each framework against itself (A/A)" in (tmp_path / "report.md").read_text()
