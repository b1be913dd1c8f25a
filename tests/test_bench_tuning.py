"""dualbench bench at each framework's best, inference latency and model pairs (issue: paired benchmark).

Nothing here asserts a speed: the tests check what is planned, chosen, recorded and reported.
"""
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from dualbench import backends
from dualbench import bench as B
from dualbench.bench.planning import choose_best, configs
from dualbench.timings.settings import candidates, knobs_text, parse_knobs, thread_candidates
from dualbench.common.results import append_rows, read_csv
from dualbench.common.tasks import TASKS
from tests.conftest import run_cli

TINY = replace(B.SUITES["default"], repeats=2, warmup=1, warmup_seconds=0.0, steps="2", windows=2,
               window_seconds=0.01, ttt=False, tune=True, tune_cores=2, workloads=("train", "infer"))
PAIR = ["--torch", "tests/pair_models.py:torch_net", "--paddle", "tests/pair_models.py:paddle_net"]
BOTH = all(backends.is_installed(n) for n in backends.BACKENDS)


def test_candidates_cover_threads_and_both_onednn_settings():
    assert thread_candidates(1) == [1] and thread_candidates(2) == [1, 2] and thread_candidates(6) == [1, 2, 4, 6]
    found = candidates("cpu", "paddle", 2)
    assert {(c["threads"], c["knobs"]["onednn"]) for c in found} == {(1, False), (1, True), (2, False), (2, True)}
    assert len(candidates("cpu", "torch", 2, modes=("eager", "compiled"))) == 8
    assert {tuple(sorted(c["knobs"])) for c in candidates("gpu", "torch", 8)} == {("cudnn_benchmark", "tf32")}
    assert parse_knobs(knobs_text({"onednn": True, "tf32": False})) == {"onednn": True, "tf32": False}


def test_tune_stage_plans_every_candidate_of_each_backend_on_its_own():
    groups = B.plan(TINY, [TASKS["mnist-mlp"]], ["torch", "paddle"], [2], "run", stage="tune")
    cells = [c for g in groups for c in g["cells"]]
    assert len(groups) == 1 and {c["stage"] for c in cells} == {"tune"} and {c["repeat"] for c in cells} == {1}
    for name in ("torch", "paddle"):
        mine = {(c["threads"], c["knobs"]) for c in cells if c["backend"] == name}
        assert mine == {(1, "onednn=off"), (1, "onednn=on"), (2, "onednn=off"), (2, "onednn=on")}
    assert all(c["kind"] == "speed" and c["loops"] == ["engine"] for c in cells)   # no bare loop, no inference
    keys = [k for c in cells for k in c["keys"].values()]
    assert len(keys) == len(set(keys))
    equal = B.plan(TINY, [TASKS["mnist-mlp"]], ["torch", "paddle"], [2], "run")
    assert not set(keys) & {k for g in equal for c in g["cells"] for k in c["keys"].values()}


def tuning_rows(groups, speed):
    """ok engine rows for the tuning cells, samples/s from speed(backend, threads, knobs)."""
    rows = []
    for g in groups:
        for c in g["cells"]:
            rows.append({"cell_key": c["keys"]["engine"], "task": c["task"], "backend": c["backend"], "loop": "engine",
                         "stage": "tune", "threads": c["threads"], "mode": c["mode"], "precision": c["precision"],
                         "knobs": c["knobs"], "batch_size": c["batch_size"], "repeat": 1, "status": "ok",
                         "samples_per_s": speed(c["backend"], c["threads"], c["knobs"])})
    return rows


def test_each_backend_gets_its_own_fastest_setting_and_the_best_stage_runs_it(tmp_path):
    tune = B.plan(TINY, [TASKS["mnist-lenet"]], ["torch", "paddle"], [2], "run", stage="tune")
    path = tmp_path / "bench.csv"

    def speed(backend, threads, knobs):   # paddle fastest at 1 thread with oneDNN off, torch at 2 with it on
        if backend == "paddle":
            return 3000.0 if (threads, knobs) == (1, "onednn=off") else 2500.0
        return 9000.0 if (threads, knobs) == (2, "onednn=on") else 4000.0

    rows = tuning_rows(tune, speed)
    rows.append({**rows[0], "cell_key": "another run's key", "samples_per_s": 1e9})   # not this plan's: ignored
    append_rows(path, rows, B.BENCH_COLUMNS)
    chosen = choose_best(path, tune)
    assert chosen["mnist-lenet"]["paddle"] == {"threads": 1, "mode": "eager", "precision": "fp32",
                                              "knobs": {"onednn": False}}
    assert chosen["mnist-lenet"]["torch"]["threads"] == 2 and chosen["mnist-lenet"]["torch"]["knobs"] == {"onednn": True}
    best = B.plan(TINY, [TASKS["mnist-lenet"]], ["torch", "paddle"], [2], "run", stage="best", chosen=chosen)
    cells = [c for g in best for c in g["cells"]]
    assert {(c["backend"], c["threads"], c["knobs"]) for c in cells} == {("torch", 2, "onednn=on"),
                                                                        ("paddle", 1, "onednn=off")}
    assert {c["kind"] for c in cells} == {"speed", "infer"} and {c["repeat"] for c in cells} == {1, 2}
    speed_cells = [c for c in cells if c["kind"] == "speed"]
    assert all(c["loops"] == ["engine", "bare"] for c in speed_cells)   # the overhead check at the same setting
    # the pairs of the best stage share one configuration, although the settings differ
    assert len({B.config_id(c) for c in speed_cells}) == 1
    assert not set(k for c in cells for k in c["keys"].values()) & set(r["cell_key"] for r in rows)


def test_without_a_winner_for_a_backend_the_task_has_no_best_stage():
    chosen = {"mnist-lenet": {"torch": {"threads": 2, "mode": "eager", "precision": "fp32", "knobs": {}}}}
    assert configs(TINY, [TASKS["mnist-lenet"]], ["torch", "paddle"], [2], "best", chosen) == []


def test_inference_cells_at_batch_one_and_the_training_batch_in_the_final_stage_only():
    equal = configs(TINY, [TASKS["mnist-lenet"]], ["torch", "paddle"], [2], "equal", final=False)
    assert {c["kind"] for c in equal} == {"speed"}
    final = configs(TINY, [TASKS["mnist-lenet"]], ["torch", "paddle"], [2], "equal", final=True)
    assert sorted(c["batch_size"] for c in final if c["kind"] == "infer") == [1, 64]
    only_infer = replace(TINY, workloads=("infer",))
    tune = configs(only_infer, [TASKS["mnist-lenet"]], ["torch"], [2], "tune")
    assert {(c["kind"], c["batch_size"]) for c in tune} == {("infer", 64)}   # tuned on inference at the larger batch


def test_ttt_suite_targets_real_datasets_at_the_best_setting():
    suite = B.SUITES["ttt"]
    chosen = {"mnist-lenet": {n: {"threads": 1, "mode": "eager", "precision": "fp32", "knobs": {"onednn": True}}
                              for n in ("torch", "paddle")}}
    found = [c for c in configs(suite, [TASKS["mnist-lenet"]], ["torch", "paddle"], [2], "best", chosen)
             if c["kind"] == "ttt"]
    assert {(c["dataset"], c["target"]) for c in found} == {("fashion-mnist", 0.85), ("mnist5k", 0.95)}
    cell = B.planning.make_cell(suite, found[0], "paddle", 1, "run", 0, 1000, None, "best", None)
    assert cell["knobs"] == "onednn=on" and cell["target"] == 0.85 and cell["max_epochs"] == suite.ttt_max_epochs


@pytest.mark.parametrize("name", backends.BACKENDS)
def test_apply_settings_sets_the_switch_and_restores_the_default(name):
    if not backends.is_installed(name):
        pytest.skip(f"{name} not installed")
    speed = backends.load(name, "speed")
    backend = backends.load(name)
    dev, _ = backend.device.configure(1, "cpu")

    def onednn():
        if name == "torch":
            import torch
            return torch.backends.mkldnn.enabled
        import paddle
        return paddle.get_flags(["FLAGS_use_mkldnn"])["FLAGS_use_mkldnn"]

    default = speed.DEFAULT_KNOBS["onednn"]
    assert speed.apply_settings({"onednn": not default}, dev) == {"onednn": not default}
    assert onednn() == (not default)
    assert speed.apply_settings({}, dev) == {"onednn": default} and onednn() == default


@pytest.mark.parametrize("name", backends.BACKENDS)
def test_infer_cell_reports_latency_median_and_p95(name):
    if not backends.is_installed(name):
        pytest.skip(f"{name} not installed")
    from dualbench.bench.worker import run_bench_cell
    suite = replace(TINY, tune=False, workloads=("infer",), window_seconds=0.02, windows=3)
    groups = B.plan(suite, [TASKS["mnist-mlp-dropout"]], [name], [1], "run", samples=512)
    cell = groups[0]["cells"][0]
    speed = backends.load(name, "speed")
    rows = run_bench_cell({**cell, "knobs": "onednn=on"}, backends.load(name), speed, {})
    assert len(rows) == 1 and rows[0]["loop"] == "infer" and rows[0]["batch_size"] == 1
    row = rows[0]
    assert row["infer_calls"] >= 20 and 0 < row["latency_ms"] <= row["p95_ms"]
    assert row["latency_ms_lo"] <= row["latency_ms"] <= row["latency_ms_hi"]
    assert row["samples_per_s"] == pytest.approx(1000.0 / row["latency_ms"])
    assert row["knobs"] == "onednn=on" and row["knobs_in_effect"] == "onednn=on" and row["stage"] == "equal"


def test_infer_step_is_eval_mode_without_autograd():
    if not BOTH:
        pytest.skip("needs both frameworks")
    import paddle
    import torch
    from dualbench.backends.paddle import speed as paddle_speed
    from dualbench.backends.torch import speed as torch_speed
    for speed, model, x in ((torch_speed, torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.9)),
                             torch.ones(2, 4)),
                            (paddle_speed, paddle.nn.Sequential(paddle.nn.Linear(4, 4), paddle.nn.Dropout(0.9)),
                             paddle.ones([2, 4]))):
        infer = speed.make_infer_step(model)
        a, b = infer(x), infer(x)
        assert not model.training and np.array_equal(np.asarray(a), np.asarray(b))   # dropout off
        assert a.stop_gradient if hasattr(a, "stop_gradient") else not a.requires_grad


def bench_rows(task, stage, sps_torch, sps_paddle, *, threads=(2, 2), knobs=("", ""), loop="engine", bare=None):
    """ok rows of one configuration, one per backend and repeat."""
    rows = []
    for r, (t, p) in enumerate(zip(sps_torch, sps_paddle), start=1):
        for name, value, th, kn in (("torch", t, threads[0], knobs[0]), ("paddle", p, threads[1], knobs[1])):
            base = {"suite": "default", "task": task, "backend": name, "device": "cpu", "mode": "eager",
                    "precision": "fp32", "threads": th, "knobs": kn, "stage": stage, "batch_size": 64,
                    "repeat": r, "status": "ok", "dataset": "random", "ms_per_step": 64000.0 / value}
            rows.append({**base, "loop": loop, "cell_key": f"{task}|{name}|{stage}|{loop}|{r}", "samples_per_s": value,
                         "compute_ms_per_step": 64000.0 / value, "reader_share": 0.0})
            if bare:
                rows.append({**base, "loop": "bare", "cell_key": f"{task}|{name}|{stage}|bare|{r}",
                             "samples_per_s": value * bare[name], "ms_per_step": 64000.0 / (value * bare[name])})
    return rows


def test_report_shows_both_ratios_the_chosen_settings_and_labels_input_pipeline_bound(tmp_path):
    from dualbench.report import build_report
    from dualbench.report.speed import overhead_summary, speed_summary, stage_ratios
    rows = bench_rows("mnist-mlp", "equal", [2000, 2100, 1900], [1000, 1000, 1000], bare={"torch": 1.0, "paddle": 2.0})
    rows += bench_rows("mnist-mlp", "best", [2000, 2100, 1900], [2000, 2000, 2000], threads=(2, 1),
                       knobs=("onednn=on", "onednn=off"), bare={"torch": 1.0, "paddle": 1.0})
    append_rows(tmp_path / "bench.csv", rows, B.BENCH_COLUMNS)
    bench = read_csv(tmp_path / "bench.csv")
    summary = speed_summary(bench)
    assert len(summary) == 2            # the best stage is one configuration although the threads differ
    ratios = stage_ratios(summary, overhead_summary(bench)).iloc[0]
    assert ratios["equal_ratio"] == pytest.approx(2.0, rel=0.03) and ratios["best_ratio"] == pytest.approx(1.0, rel=0.03)
    assert ratios["best_torch_setting"] == "eager fp32, 2 threads, onednn=on"
    assert ratios["best_paddle_setting"] == "eager fp32, 1 thread, onednn=off"
    assert ratios["equal_bound"] == "paddle 0.500" and ratios["best_bound"] == ""
    text = build_report(tmp_path, plots=False).read_text()
    assert "### Equal settings and each at its best" in text
    assert "| mnist-mlp | 64 | 1.998 [" in text and "| 0.999 [" in text and "eager fp32, 1 thread, onednn=off" in text
    assert "| equal: paddle 0.500 |" in text


def test_latency_ratio_verdict_says_whether_torch_is_faster():
    from dualbench.report.speed import infer_summary
    rows = []
    for r in (1, 2, 3):
        for name, ms in (("torch", 1.0 + 0.01 * r), ("paddle", 2.0)):
            rows.append({"cell_key": f"{name}{r}", "suite": "default", "task": "t", "backend": name, "device": "cpu",
                         "mode": "eager", "precision": "fp32", "threads": 1, "batch_size": 1, "repeat": r,
                         "loop": "infer", "status": "ok", "latency_ms": ms, "p95_ms": 1.5 * ms, "infer_calls": 100,
                         "stage": "best", "dataset": "random"})
    summary = infer_summary(pd.DataFrame(rows)).iloc[0]
    assert summary["ratio"] == pytest.approx(0.51, rel=0.02) and summary["verdict"] == "faster"
    assert summary["paddle_p95_ms"] == pytest.approx(3.0) and summary["pairs"] == 3


@pytest.mark.slow
@pytest.mark.e2e
def test_model_pair_bench_end_to_end(tmp_path):
    """A user's model pair through --torch/--paddle: equal, tuning and best stages, training (pre-loaded
    random batches) and inference rows, the SPECs recorded, both ratios and the latency table reported."""
    if not BOTH:
        pytest.skip("needs both frameworks")
    out = run_cli("bench", *PAIR, "--input", "3,16,16", "--classes", "5", "--batch-size", "4", "--repeats", "1",
                  "--windows", "2", "--warmup", "1", "--warmup-seconds", "0", "--window-seconds", "0.01",
                  "--no-progress", "--out", tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "tuned torch_net/paddle_net: torch eager fp32" in out.stderr
    frame = read_csv(tmp_path / "bench.csv", B.BENCH_COLUMNS)
    assert (frame["status"] == "ok").all()
    assert set(frame["stage"]) == {"equal", "tune", "best", "aa"}
    assert set(frame.loc[frame["stage"] == "best", "loop"]) == {"bare", "infer"}
    aa = frame[frame["stage"] == "aa"]      # the pair against itself, per framework, sides a and b
    assert len(aa) == 2 * 2 and set(aa["loop"]) == {"bare"} and aa["worker_pid"].nunique() == 4
    assert set(frame.loc[frame["loop"] == "infer", "batch_size"]) == {1, 4}
    assert frame["model_spec"].str.contains("pair_models.py:torch_net").all()
    assert frame["peak_mem_mb"].gt(0).all() and frame["cell_key"].is_unique
    assert run_cli("report", tmp_path, "--no-plots").returncode == 0
    text = (tmp_path / "report.md").read_text()
    assert "### Equal settings and each at its best" in text and "## Inference latency" in text
    assert "### Tuning" in text and "| torch_net/paddle_net | torch | train | 4 |" in text
    assert "**Machine noise floor** (suite pairs, " in text and "2 A/A pairs on torch_net/paddle_net" in text


@pytest.mark.slow
@pytest.mark.e2e
def test_model_pair_spec_that_does_not_load_is_a_one_line_error(tmp_path):
    if not BOTH:
        pytest.skip("needs both frameworks")
    out = run_cli("bench", "--torch", "tests/pair_models.py:not_a_model", "--paddle", "tests/pair_models.py:paddle_net",
                  "--input", "3,16,16", "--repeats", "1", "--no-progress", "--out", tmp_path, timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "not_a_model" in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    for args, words in ((["--torch", "x", "--paddle", "y:z"], "--torch 'x'"), (PAIR[:2], "--paddle"),
                        (PAIR, "--input")):
        out = run_cli("bench", *args, "--out", tmp_path)
        assert out.returncode == 2 and words in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_quantile_ci_covers_the_95th_percentile():
    from dualbench.common.stats import median_ci, quantile_ci
    rng = np.random.default_rng(1)
    hits = sum(lo <= 1.6448536 <= hi for lo, hi in (quantile_ci(rng.normal(size=200), 0.95)[1:] for _ in range(400)))
    assert hits / 400 >= 0.93
    assert all(math.isnan(v) for v in quantile_ci(rng.normal(size=20), 0.95)[1:])    # too few for a bound
    med, lo, hi = median_ci(rng.normal(size=5000))     # thousands of latencies: no overflow
    assert lo < med < hi and abs(med) < 0.1


def test_inference_has_its_own_number_of_pairs_and_no_second_stage():
    suite = replace(TINY, repeats=4, infer_repeats=2)
    groups = B.plan(suite, [TASKS["mnist-mlp"]], ["torch", "paddle"], [2], "run")
    repeats = {(c["kind"], c["repeat"]) for g in groups for c in g["cells"]}
    assert {r for k, r in repeats if k == "speed"} == {1, 2, 3, 4} and {r for k, r in repeats if k == "infer"} == {1, 2}
    extra = {B.config_id(c): 6 for g in groups for c in g["cells"]}
    second = B.plan(suite, [TASKS["mnist-mlp"]], ["torch", "paddle"], [2], "run", extra=extra)
    assert {c["kind"] for g in second for c in g["cells"]} == {"speed"}


@pytest.mark.slow
def test_workers_not_timing_are_stopped_while_another_times_its_cell():
    """run_alone SIGSTOPs every other worker of the group (no idle threads beside the timed cell) and
    SIGCONTs the one it runs; close() resumes a stopped worker so it can exit."""
    from dualbench.bench.pool import run_alone, start_worker, worker_key
    if not backends.is_installed("torch"):
        pytest.skip("needs torch")
    suite = replace(TINY, tune=False, workloads=("train",))
    cells = [c for g in B.plan(suite, [TASKS["mnist-linear-mse"]], ["torch"], [1], "run", samples=512)
             for c in g["cells"]]
    first, second = {**cells[0], "knobs": "onednn=off"}, {**cells[1], "knobs": "onednn=on"}
    keys = [worker_key(first), ("torch", 1, (("DUALBENCH_PROBE", "1"),))]   # two workers of one backend
    workers = {key: start_worker(key) for key in keys}

    def state(key):
        return open(f"/proc/{workers[key].proc.pid}/stat").read().rsplit(")", 1)[1].split()[0]

    try:
        for worker in workers.values():
            worker.wait_ready()
        assert "rows" in run_alone(workers, keys[0], first)
        assert state(keys[1]) == "T" and state(keys[0]) != "T"
        assert "rows" in run_alone(workers, keys[1], second)
        assert state(keys[0]) == "T" and state(keys[1]) != "T"
    finally:
        for worker in workers.values():
            worker.close()
    assert all(w.proc.returncode == 0 for w in workers.values())


def test_gpu_suite_tunes_compile_amp_cudnn_autotuning_and_tf32():
    suite = replace(B.SUITES["gpu"], tune_cores=8)
    found = configs(suite, [TASKS["mnist-lenet"]], ["torch", "paddle"], [8], "tune")
    torch_settings = [c["settings"]["torch"] for c in found if "torch" in c["settings"]]
    assert {(s["mode"], s["precision"]) for s in torch_settings} == {("eager", "fp32"), ("eager", "amp"),
                                                                     ("compiled", "fp32"), ("compiled", "amp")}
    assert {tuple(sorted(s["knobs"].items())) for s in torch_settings} >= {(("cudnn_benchmark", True), ("tf32", True))}
    assert all(s["threads"] == 8 for s in torch_settings)
