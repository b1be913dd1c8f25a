"""dualbench report: tables, statistics and plots rebuilt from small hand-made CSVs with known answers."""
import numpy as np
import pandas as pd
import pytest

from dualbench.bench import BENCH_COLUMNS
from dualbench.report import accuracy_table, build_report, overhead_summary, speed_summary, ttt_summary
from dualbench.common.errors import UserError
from dualbench.common.results import RUN_COLUMNS, append_rows, read_csv

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def bench_rows(task, torch_sps, paddle_sps, rng, repeats=6, reader_share=0.02, harness=1.0):
    """Interleaved pairs with a drift shared within each pair; engine and bare rows per cell."""
    rows = []
    for r in range(1, repeats + 1):
        drift = float(np.exp(rng.normal(0, 0.05)))
        for backend, sps in (("torch", torch_sps), ("paddle", paddle_sps)):
            bare = sps * drift * float(np.exp(rng.normal(0, 0.002)))
            bare_ms = 1000 * 64 / bare
            compute_ms = bare_ms / harness
            engine_ms = compute_ms / (1 - reader_share)
            base = {"suite": "default", "task": task, "backend": backend, "mode": "eager", "precision": "fp32",
                    "threads": 2, "batch_size": 64, "repeat": r, "device": "cpu", "dataset": "random-uint8-n10000",
                    "framework_version": "9.9", "device_name": "test cpu", "platform": "Linux-x86_64",
                    "python": "3.x", "numpy": "2.x", "git_commit": "abc", "peak_mem_mb": 500.0,
                    "peak_mem_kind": "rss", "first_step_s": 0.1, "epoch_samples": 50000,
                    "timestamp": f"2025-01-01T00:00:{r:02d}+00:00"}
            rows.append({**base, "cell_key": f"{task}|{backend}|engine|{r}", "loop": "engine",
                         "samples_per_s": 1000 * 64 / engine_ms, "ms_per_step": engine_ms,
                         "compute_ms_per_step": compute_ms, "reader_ms_per_step": engine_ms - compute_ms,
                         "reader_share": reader_share, "epoch_seconds": 50000 / (1000 * 64 / engine_ms)})
            rows.append({**base, "cell_key": f"{task}|{backend}|bare|{r}", "loop": "bare",
                         "samples_per_s": bare, "ms_per_step": bare_ms, "compute_ms_per_step": bare_ms,
                         "reader_ms_per_step": 0.0, "reader_share": 0.0})
    return rows


def ttt_rows():
    rows = []
    for r in (1, 2):
        for backend, secs in (("torch", 3.0), ("paddle", 6.0)):
            rows.append({"cell_key": f"ttt|{backend}|{r}", "suite": "default", "task": "mnist-lenet",
                         "backend": backend, "loop": "ttt", "mode": "eager", "precision": "fp32", "threads": 2,
                         "batch_size": 64, "repeat": r, "device": "cpu", "dataset": "synthetic-mnist",
                         "target_accuracy": 0.97, "ttt_seconds": secs, "ttt_epochs": 2, "ttt_acc": 0.98,
                         "ttt_reached": True, "timestamp": f"2025-01-01T00:01:{r:02d}+00:00"})
    return rows


def run_rows():
    rows = []
    accs = {"torch": [0.981, 0.983, 0.979], "paddle": [0.901, 0.905, 0.899]}   # a clear difference
    for backend, values in accs.items():
        for seed, acc in enumerate(values):
            for epoch in (1, 2, 3):
                last = epoch == 3
                rows.append({"run_id": f"run-{backend}", "task": "mnist-mlp", "backend": backend, "seed": seed,
                             "epoch": epoch, "status": "ok", "train_loss": 1.0 / epoch, "train_acc": 0.8 + 0.05 * epoch,
                             "val_acc": 0.8 + 0.04 * epoch, "val_loss": 1.1 / epoch,
                             "test_acc": acc if last else None, "test_loss": 0.1 if last else None,
                             "dataset": "synthetic-mnist", "synthetic": True, "framework_version": "9.9",
                             "device": "cpu", "device_name": "test cpu", "threads": 2,
                             "timestamp": f"2025-01-01T00:00:{epoch:02d}+00:00"})
    return rows


@pytest.fixture
def results_dir(tmp_path):
    rng = np.random.default_rng(0)
    append_rows(tmp_path / "bench.csv", bench_rows("mnist-mlp", 20000.0, 10000.0, rng)       # torch 2x faster
                + bench_rows("mnist-lenet", 5000.0, 5000.0, rng, harness=0.9)                 # same speed
                + ttt_rows(), BENCH_COLUMNS)
    append_rows(tmp_path / "runs.csv", run_rows(), RUN_COLUMNS)
    return tmp_path


def test_speed_summary_recovers_known_ratios_and_verdicts(results_dir):
    summary = speed_summary(read_csv(results_dir / "bench.csv")).set_index("task")
    assert summary.loc["mnist-mlp", "ratio"] == pytest.approx(2.0, rel=0.01)
    assert summary.loc["mnist-mlp", "ratio_lo"] < 2.0 < summary.loc["mnist-mlp", "ratio_hi"]
    assert summary.loc["mnist-mlp", "verdict"] == "faster"
    assert summary.loc["mnist-lenet", "ratio"] == pytest.approx(1.0, rel=0.01)
    assert summary.loc["mnist-lenet", "verdict"] == "same"
    assert summary.loc["mnist-mlp", "pairs"] == 6
    # per-backend medians over 6 repeats have an order-statistic CI ([min, max] at n = 6)
    assert summary.loc["mnist-mlp", "torch_lo"] <= summary.loc["mnist-mlp", "torch_samples_per_s"] \
        <= summary.loc["mnist-mlp", "torch_hi"]


def test_overhead_and_ttt_summaries(results_dir):
    bench = read_csv(results_dir / "bench.csv")
    overhead = overhead_summary(bench).set_index(["task", "backend"])
    assert overhead.loc[("mnist-mlp", "torch"), "compute"] == pytest.approx(1.0, rel=1e-6)
    assert overhead.loc[("mnist-mlp", "torch"), "end_to_end"] == pytest.approx(0.98, rel=1e-6)
    assert overhead.loc[("mnist-lenet", "paddle"), "compute"] == pytest.approx(0.9, rel=1e-6)
    ttt = ttt_summary(bench).iloc[0]
    assert ttt["torch_seconds"] == 3.0 and ttt["paddle_seconds"] == 6.0 and ttt["torch_reached"] == "2/2"


def test_accuracy_table_detects_the_difference(results_dir):
    table = accuracy_table(read_csv(results_dir / "runs.csv")).iloc[0]
    assert table["torch acc"].startswith("0.9810 ±") and "(n=3)" in table["torch acc"]
    assert table["differ at 5%?"] == "yes"
    assert "synthetic" in table["dataset"]


def test_report_markdown_and_plots(results_dir):
    path = build_report(results_dir)
    text = path.read_text()
    for heading in ("## Accuracy per task and backend", "## Speed: torch / paddle throughput",
                    "## Harness overhead", "## Time to target accuracy", "## Parity", "## Machine and versions"):
        assert heading in text
    assert "Parity was not run" in text
    assert "| mnist-mlp | cpu, eager fp32, 2 threads, default switches, batch 64 |" in text and "| faster |" in text and "| same |" in text
    assert "test cpu" in text and "9.9" in text
    pngs = sorted(p.name for p in (results_dir / "plots").iterdir())
    assert pngs == ["curves-mnist-mlp-synthetic-mnist.png", "throughput.png"]   # one plot per task and dataset
    for name in pngs:
        assert (results_dir / "plots" / name).read_bytes()[:8] == PNG_MAGIC
        assert f"](plots/{name})" in text                    # referenced by a relative path
    assert (results_dir / "speed_summary.csv").exists()
    assert not [p for p in results_dir.rglob(".*")]            # no temp files left


def test_report_with_parity_and_without_bench(tmp_path):
    append_rows(tmp_path / "runs.csv", run_rows(), RUN_COLUMNS)
    pd.DataFrame([
        {"task": "mnist-mlp", "check": "forward", "name": "fc1", "max_abs": 1e-7, "max_rel": 3e-7, "within": True, "cause": ""},
        {"task": "mnist-mlp", "check": "eval", "name": "bn1", "max_abs": 4e-6, "max_rel": 2e-3, "within": False,
         "cause": "BN running variance: unbiased in torch"},
    ]).to_csv(tmp_path / "parity.csv", index=False)
    text = build_report(tmp_path, plots=False).read_text()
    assert "`dualbench bench` was not run" in text
    assert "| mnist-mlp | 2 | 1 |" in text and "BN running variance" in text
    assert not (tmp_path / "plots").exists()


def test_report_refuses_an_empty_or_missing_folder(tmp_path):
    with pytest.raises(UserError):
        build_report(tmp_path)
    with pytest.raises(UserError):
        build_report(tmp_path / "nope")


def test_report_cli_malformed_csv_is_one_line(tmp_path):
    from tests.conftest import run_cli
    (tmp_path / "bench.csv").write_bytes(b"\xff\xfe\x00garbage")
    out = run_cli("report", tmp_path)
    assert out.returncode == 2
    assert "bench.csv" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_busy_machine_is_flagged(results_dir):
    from dualbench.report import machine_load_note
    bench = read_csv(results_dir / "bench.csv")
    assert machine_load_note(bench) is None                # no load recorded: nothing claimed
    bench["cpu_count"], bench["load_avg"] = 2, 1.2
    assert "Warning" not in machine_load_note(bench)
    bench["load_avg"] = 4.5
    assert "Warning: the machine was busy" in machine_load_note(bench)


def test_failed_and_diverged_cells_are_listed_and_left_out_of_the_ratios(tmp_path):
    rng = np.random.default_rng(1)
    good = bench_rows("mnist-mlp", 20000.0, 10000.0, rng) + bench_rows("mnist-lenet", 5000.0, 5000.0, rng)
    # mnist-mlp paddle repeat 3 failed first, then succeeded on the rerun (same cell_key, later timestamp)
    retried = next(r for r in good if r["cell_key"] == "mnist-mlp|paddle|engine|3")
    failed_first = {k: retried[k] for k in ("cell_key", "suite", "task", "backend", "loop", "mode", "precision",
                                            "threads", "batch_size", "repeat", "device", "dataset")}
    failed_first.update(status="failed", error="RuntimeError: first try", timestamp="2024-12-31T00:00:00+00:00")
    # every mnist-lenet paddle cell diverged
    lenet = [r if not (r["task"] == "mnist-lenet" and r["backend"] == "paddle") else
             {k: r[k] for k in failed_first if k not in ("status", "error", "timestamp")}
             | {"status": "diverged", "error": "diverged at step 7: loss nan; last finite loss 2.3 at step 6",
                "timestamp": r["timestamp"]} for r in good if r["task"] == "mnist-lenet"]
    mlp = [r for r in good if r["task"] == "mnist-mlp"]
    append_rows(tmp_path / "bench.csv", [failed_first] + mlp + lenet, BENCH_COLUMNS)

    bench = read_csv(tmp_path / "bench.csv")
    summary = speed_summary(bench).set_index("task")
    assert summary.loc["mnist-mlp", "ratio"] == pytest.approx(2.0, rel=0.01)     # the retry counts, once
    assert summary.loc["mnist-mlp", "pairs"] == 6 and summary.loc["mnist-mlp", "paddle_failed"] == 0
    assert summary.loc["mnist-lenet", "pairs"] == 0 and np.isnan(summary.loc["mnist-lenet", "ratio"])
    assert np.isnan(summary.loc["mnist-lenet", "paddle_samples_per_s"])        # never a 0 throughput
    assert summary.loc["mnist-lenet", "paddle_diverged"] == 6 and summary.loc["mnist-lenet", "verdict"] == \
        "n/a (paddle diverged)"
    assert summary.loc["mnist-lenet", "torch_samples_per_s"] == pytest.approx(5000.0 * 0.98, rel=0.1)
    overhead = overhead_summary(bench).set_index(["task", "backend"])
    assert ("mnist-lenet", "paddle") not in overhead.index

    text = build_report(tmp_path, plots=False).read_text()
    assert "### Failed / diverged cells" in text and "first try" not in text
    assert ("| mnist-lenet | paddle | cpu, eager fp32, 2 threads, default switches, batch 64 | engine, bare | 1, 2, 3, 4, 5, 6 | "
            "diverged | diverged at step 7: loss nan; last finite loss 2.3 at step 6 |") in text
    assert "| n/a (paddle diverged) | 0 | paddle: 6 diverged |" in text
    csv = pd.read_csv(tmp_path / "speed_summary.csv").set_index("task")
    assert csv.loc["mnist-lenet", ["paddle_samples_per_s", "paddle_ms_per_step", "ratio"]].isna().all()


def test_a_repeated_measured_row_counts_once_and_is_noted(results_dir):
    bench = read_csv(results_dir / "bench.csv")
    clean = speed_summary(bench).set_index("task")
    repeated = bench[(bench.task == "mnist-mlp") & (bench.repeat == 2)].assign(samples_per_s=1.0)   # a bogus copy
    summary = speed_summary(pd.concat([bench, repeated], ignore_index=True)).set_index("task")
    assert summary.loc["mnist-mlp", "pairs"] == 6
    for column in ("ratio", "ratio_lo", "ratio_hi", "torch_samples_per_s", "paddle_samples_per_s"):
        assert summary.loc["mnist-mlp", column] == clean.loc["mnist-mlp", column]
    append_rows(results_dir / "bench.csv", repeated.to_dict("records"), BENCH_COLUMNS)
    report = build_report(results_dir, plots=False).read_text()
    assert "4 bench.csv row(s) repeat a measured cell" in report    # engine + bare, both backends


# ---------------------------------------------------------------------------------------------
# A/A pairs: the machine's noise floor beside the torch/paddle ratios


def timed_rows(task, rng, delay_ms, repeats=8, torch_ms=10.0, paddle_ms=11.0, aa_bias=1.0):
    """Engine rows of interleaved torch/paddle pairs and torch and paddle A/A pairs (sides a, b in their own
    worker processes), each cell's step slowed by an injected delay drawn from an exponential with mean
    delay_ms (what a busy machine does); side a's step time is divided by aa_bias."""
    rows, pid = [], 100
    for r in range(1, repeats + 1):
        cells = [("torch", "equal", "", torch_ms), ("paddle", "equal", "", paddle_ms)]
        cells += [(b, "aa", side, ms / (aa_bias if side == "a" else 1.0))
                  for b, ms in (("torch", torch_ms), ("paddle", paddle_ms)) for side in "ab"]
        for backend, stage, side, ms in cells:
            ms = ms + float(rng.exponential(delay_ms)) if delay_ms else ms * float(np.exp(rng.normal(0, 0.002)))
            pid += 1
            rows.append({"cell_key": f"{task}|{backend}|{stage}{side}|{r}", "suite": "default", "task": task,
                         "backend": backend, "loop": "engine", "mode": "eager", "precision": "fp32", "threads": 2,
                         "batch_size": 64, "repeat": r, "device": "cpu", "dataset": "random-uint8-n10000",
                         "stage": stage, "aa_side": side or None, "worker_pid": pid, "samples_per_s": 64000 / ms,
                         "ms_per_step": ms, "timestamp": f"2025-01-01T00:{r:02d}:00+00:00"})
    return rows


def test_aa_rows_are_in_no_torch_paddle_number(results_dir):
    from dualbench.report.speed import infer_summary, stage_ratios, tuning_summary
    bench = read_csv(results_dir / "bench.csv")
    wild = [{**r, "samples_per_s": r["samples_per_s"] * (1000.0 if r["aa_side"] == "a" else 0.001)}
            for r in timed_rows("mnist-mlp", np.random.default_rng(0), 0)
            if r["stage"] == "aa"]            # same task, setting and repeats as the torch/paddle pairs
    wild += [{**r, "cell_key": r["cell_key"] + "|bare", "loop": "bare"} for r in wild]
    append_rows(results_dir / "bench.csv", wild, BENCH_COLUMNS)
    with_aa = read_csv(results_dir / "bench.csv")
    for summarise in (speed_summary, overhead_summary, infer_summary, ttt_summary, tuning_summary):
        before, after = summarise(bench), summarise(with_aa)
        pd.testing.assert_frame_equal(before[[c for c in before if c in after]], after[[c for c in before]])
    summary = speed_summary(with_aa)
    assert set(summary["stage"]) == {"equal"} and summary.set_index("task").loc["mnist-mlp", "pairs"] == 6
    assert len(stage_ratios(summary)) == 2
    text = build_report(results_dir, plots=False).read_text()
    assert "### Machine noise: each framework against itself (A/A)" in text
    assert not [line for line in text.splitlines() if "A/A" in line and "| faster |" in line]


def test_a_noisy_machine_widens_the_floor_and_the_label_follows(tmp_path):
    from dualbench.report.speed import aa_pairs, machine_floor, with_settings
    floors, summaries = {}, {}
    for name, delay in (("quiet", 0.0), ("noisy", 6.0)):
        folder = tmp_path / name
        append_rows(folder / "bench.csv", timed_rows("mnist-mlp", np.random.default_rng(5), delay), BENCH_COLUMNS)
        bench = read_csv(folder / "bench.csv")
        floors[name] = machine_floor(aa_pairs(with_settings(bench))).set_index("framework")
        summaries[name] = speed_summary(bench).iloc[0]
        build_report(folder, plots=False)
    quiet, noisy = floors["quiet"].loc["both"], floors["noisy"].loc["both"]
    assert quiet["spread_pct"] < 1 and noisy["spread_pct"] > 10 and quiet["pairs"] == noisy["pairs"] == 16
    assert noisy["ratio_hi"] - noisy["ratio_lo"] > 5 * (quiet["ratio_hi"] - quiet["ratio_lo"])
    assert set(floors["noisy"].index) == {"torch", "paddle", "both"}
    # torch 10% faster than paddle: outside the quiet floor, inside the noisy one
    assert summaries["quiet"]["ratio_lo"] > quiet["ratio_hi"] and summaries["quiet"]["machine_noise"] == ""
    assert summaries["noisy"]["ratio_lo"] <= noisy["ratio_hi"] and summaries["noisy"]["machine_noise"] == \
        "within machine noise"
    assert summaries["noisy"]["spread_pct"] > 5 * summaries["quiet"]["spread_pct"]
    assert summaries["noisy"]["pairs_for_3pct"] > summaries["quiet"]["pairs_for_3pct"]
    text = (tmp_path / "noisy" / "report.md").read_text()
    assert (f"the same framework against itself gave a ratio of {noisy['ratio']:.3f} [{noisy['ratio_lo']:.3f}, "
            f"{noisy['ratio_hi']:.3f}], a per-pair spread of {noisy['spread_pct']:.1f} %") in text
    assert "| within machine noise |" in text
    assert "within machine noise" not in (tmp_path / "quiet" / "report.md").read_text().split("### All configurations")[1]
    summary_csv = pd.read_csv(tmp_path / "noisy" / "speed_summary.csv")
    assert list(summary_csv["machine_noise"]) == ["within machine noise"]
    aa = pd.read_csv(tmp_path / "noisy" / "aa_summary.csv")
    assert list(aa["processes"]) == [16, 16] and aa["two_processes"].all() and not aa["bias"].any()


def test_an_aa_ratio_whose_ci_excludes_one_is_reported_as_a_bias(tmp_path):
    from dualbench.report.speed import aa_pairs, aa_summary, with_settings
    append_rows(tmp_path / "bench.csv", timed_rows("mnist-mlp", np.random.default_rng(2), 0, aa_bias=1.1),
                BENCH_COLUMNS)
    aa = aa_summary(aa_pairs(with_settings(read_csv(tmp_path / "bench.csv"))))
    assert aa["bias"].all() and (aa["ratio"] > 1.05).all()
    text = build_report(tmp_path, plots=False).read_text()
    assert text.count("bias: the CI excludes 1, a harness or order effect, not noise") == 2
