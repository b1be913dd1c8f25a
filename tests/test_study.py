"""dualbench study: the output-gradient probe, claim checks with known answers, a tiny real study end to end."""
import math

import numpy as np
import pandas as pd
import pytest

from dualbench import study as S
from dualbench.common.errors import UserError
from dualbench.common.results import RUN_COLUMNS, append_rows, read_csv
from dualbench.common.stats import holm
from dualbench.study.studies import STUDIES, Arm, Comparison, DataPlan, Study
from tests.conftest import run_cli


def test_holm_matches_the_step_down_rule():
    adjusted = holm([0.01, 0.04, math.nan, 0.03])
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06
    assert adjusted[0] == pytest.approx(0.03) and adjusted[3] == pytest.approx(0.06)
    assert adjusted[1] == pytest.approx(0.06) and math.isnan(adjusted[2])
    assert holm([0.9, 0.8]).max() <= 1.0


@pytest.mark.parametrize("loss", ["ce", "mse_onehot"])
def test_output_gradient_is_the_analytic_per_sample_gradient(backend, loss):
    """CE: dL_i/dz_i = softmax(z_i) - onehot; softmax-MSE: J_softmax^T 2(p - onehot)/C. Norms per sample."""
    from dataclasses import replace
    from dualbench.common.tasks import act, flatten, get_task, linear
    task = get_task("mnist-conv-ce" if loss == "ce" else "mnist-conv-softmax-mse")
    layers = (flatten(), linear("fc", 784, 10)) + ((act("softmax", "softmax"),) if loss == "mse_onehot" else ())
    task = replace(task, model=replace(task.model, layers=layers))
    backend.device.seed(0)
    model = backend.models.build_model(task.model)
    state = backend.train.make_state(task, model, backend.device.configure(1)[0])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, size=32).astype(np.int64)
    loader = backend.data.make_loader(x, y, [np.arange(32)], state.dev)
    measured = backend.train.output_gradient(state, loader)

    w = backend.weights.export_weights(model)
    z = x.reshape(32, -1).astype(np.float64) @ w["fc.weight"].T + w["fc.bias"]
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(10)[y]
    if loss == "ce":
        g = p - onehot
    else:
        d = 2 * (p - onehot) / 10
        g = np.einsum("nj,nji->ni", d, np.einsum("ni,ij->nij", p, np.eye(10)) - np.einsum("ni,nj->nij", p, p))
    assert measured == pytest.approx(np.linalg.norm(g, axis=1).mean(), rel=1e-4)


# ---------------------------------------------------------------------------------------------
# Claim checks on hand-made runs.csv rows


def fake_rows(task, accs, backend="torch", status="ok", epochs=10, dataset="mnist5k"):
    rows = []
    for seed, acc in enumerate(accs):
        row = {"run_id": f"{task}-{backend}-{seed}", "task": task, "backend": backend, "seed": seed, "epoch": epochs,
               "epochs_planned": epochs, "status": status, "dataset": dataset, "synthetic": False,
               "n_train": 4000, "n_test": 1000, "threads": 1, "framework_version": "x", "lr": 0.01,
               "timestamp": f"2026-01-01T00:00:{seed:02d}+00:00", "epoch_seconds": 1.0}
        if status == "ok":
            row.update({"test_acc": acc, "final_train_acc": acc})
        else:
            row.update({"diverged_step": 3, "last_finite_loss": 1.5})
        rows.append(row)
    return pd.DataFrame(rows)


TOY = Study("toy", "toy", "000", arms=(Arm("mnist-conv-ce"), Arm("mnist-conv-mse"), Arm("mnist-conv-softmax-mse")),
            data=(DataPlan("mnist5k"),),
            comparisons=(Comparison("mnist-conv-ce", "mnist-conv-softmax-mse", "CE beats softmax-MSE"),
                         Comparison("mnist-conv-ce", "mnist-conv-mse", "CE beats value-MSE"),
                         Comparison("mnist-conv-mse", "mnist-conv-softmax-mse", "they differ", two_sided=True)))


def test_claims_hold_are_contradicted_or_not_shown():
    runs = pd.concat([fake_rows("mnist-conv-ce", [0.95, 0.96, 0.955, 0.952, 0.958]),
                      fake_rows("mnist-conv-softmax-mse", [0.50, 0.55, 0.52, 0.51, 0.56]),
                      fake_rows("mnist-conv-mse", [0.3] * 5, status="diverged")]).reindex(columns=RUN_COLUMNS)
    claims = S.check_claims(runs, TOY).set_index("claim")
    assert claims.loc["CE beats softmax-MSE", "verdict"] == "holds"
    assert claims.loc["CE beats softmax-MSE", "diff"] == pytest.approx(0.955 - 0.528)
    assert claims.loc["CE beats value-MSE", "verdict"].startswith("holds: 'mnist-conv-mse' diverged")
    assert claims.loc["CE beats value-MSE", "diverged_b"] == 5
    assert claims.loc["they differ", "verdict"] == "untestable (too few runs)"

    mostly_diverged = pd.concat([fake_rows("mnist-conv-ce", [0.95, 0.96, 0.955]),
                                 fake_rows("mnist-conv-mse", [0.4]),
                                 fake_rows("mnist-conv-mse", [0, 0], status="diverged").assign(seed=[1, 2])])
    claims = S.check_claims(mostly_diverged.reindex(columns=RUN_COLUMNS), TOY).set_index("claim")
    assert claims.loc["CE beats value-MSE", "verdict"] == \
        "holds: 'mnist-conv-mse' diverged in 2 of 3 seeds and the rest scored lower"

    flipped = pd.concat([fake_rows("mnist-conv-ce", [0.50, 0.55, 0.52, 0.51, 0.56]),
                         fake_rows("mnist-conv-softmax-mse", [0.95, 0.96, 0.955, 0.952, 0.958])])
    claims = S.check_claims(flipped.reindex(columns=RUN_COLUMNS), TOY).set_index("claim")
    assert claims.loc["CE beats softmax-MSE", "verdict"] == "contradicted"

    noisy = pd.concat([fake_rows("mnist-conv-ce", [0.9, 0.5, 0.7]),
                       fake_rows("mnist-conv-softmax-mse", [0.6, 0.8, 0.65])])
    claims = S.check_claims(noisy.reindex(columns=RUN_COLUMNS), TOY).set_index("claim")
    assert claims.loc["CE beats softmax-MSE", "verdict"] == "not shown"


def test_summary_counts_diverged_seeds_and_leaves_them_out_of_the_mean():
    runs = pd.concat([fake_rows("mnist-conv-ce", [0.9, 0.8]),
                      fake_rows("mnist-conv-ce", [0.0], status="diverged").assign(seed=2, run_id="d")])
    summary = S.summarise(runs.reindex(columns=RUN_COLUMNS), TOY).iloc[0]
    assert (summary["seeds"], summary["ok"], summary["diverged"]) == (3, 2, 1)
    assert summary["test_acc"] == pytest.approx(0.85)


def test_section_plots_and_index_are_rebuilt_from_runs_csv_alone(tmp_path, monkeypatch):
    """study.md from a hand-made runs.csv, without training: its tables, claims, plot and the index."""
    monkeypatch.setitem(STUDIES, "toy", TOY)
    runs = pd.concat([fake_rows(task, accs, backend=backend) for backend in ("torch", "paddle")
                      for task, accs in (("mnist-conv-ce", [0.95, 0.96, 0.955]),
                                         ("mnist-conv-softmax-mse", [0.50, 0.55, 0.52]))])
    runs = runs.assign(dataset_sha256="ab" * 32, val_acc=runs["test_acc"], train_acc=runs["test_acc"])
    append_rows(tmp_path / "toy" / "runs.csv", runs.to_dict("records"), RUN_COLUMNS)
    path = S.build_section(TOY, tmp_path)
    text = path.read_text()
    assert "# Study `toy`" in text and "## Data: mnist5k" in text and "### Claims" in text
    assert "| CE beats softmax-MSE | torch |" in text and "holds" in text
    assert (tmp_path / "toy" / "plots" / "toy-mnist5k.png").stat().st_size > 1000
    assert "[toy](toy/study.md)" in (tmp_path / "index.md").read_text()
    assert set(pd.read_csv(tmp_path / "toy" / "summary.csv")["backend"]) == {"torch", "paddle"}
    with pytest.raises(UserError, match="no runs yet"):
        S.build_section(TOY, tmp_path / "empty")


def test_plans_and_the_labelled_fallback_dataset():
    from dualbench.study.running import resolve_dataset, select_plans
    plan = DataPlan("mnist", fallback="synthetic-mnist", limit_train=200, epochs=1, seeds=(0,), why="test")
    dataset, why = resolve_dataset(plan)      # the tests' private data folder has no real MNIST
    assert dataset == "synthetic-mnist" and why.startswith("mnist is not on this machine")
    assert resolve_dataset(DataPlan("synthetic-mnist")) == ("synthetic-mnist", "")
    assert select_plans(TOY, None) == list(TOY.data) and select_plans(TOY, "mnist5k") == list(TOY.data)
    with pytest.raises(UserError, match="has no dataset cifar10"):
        select_plans(TOY, "cifar10")


# ---------------------------------------------------------------------------------------------
# A real (tiny) study, end to end


@pytest.mark.slow
@pytest.mark.e2e
def test_tiny_study_runs_resumes_and_writes_its_section(tmp_path, monkeypatch):
    tiny = Study("tiny", "tiny study", "001",
                 arms=(Arm("mnist-mlp"), Arm("mnist-mlp-relu-logits")),
                 data=(DataPlan("mnist", fallback="synthetic-mnist", limit_train=300, epochs=2, seeds=(0, 1, 2),
                                why="test data"),),
                 comparisons=(Comparison("mnist-mlp", "mnist-mlp-relu-logits", "the bug hurts"),),
                 gradient_table=True)
    monkeypatch.setitem(STUDIES, "tiny", tiny)
    assert S.run_study(tiny, ["torch"], tmp_path, threads=1, progress=False) == 0
    runs = read_csv(tmp_path / "tiny" / "runs.csv", RUN_COLUMNS)
    assert len(runs) == 2 * 3 * 2 and set(runs["dataset"]) == {"synthetic-mnist"}
    assert runs["output_grad"].notna().all() and runs["output_grad_init"].notna().sum() == 6
    assert set(runs["epochs_planned"]) == {2}

    path = S.build_section(tiny, tmp_path)
    text = path.read_text()
    assert "SYNTHETIC" in text and "mnist is not on this machine" in text
    assert "no claim (synthetic data)" in text and "Gradient at the logits" in text
    assert (tmp_path / "tiny" / "plots" / "tiny-synthetic-mnist.png").stat().st_size > 1000
    summary = pd.read_csv(tmp_path / "tiny" / "summary.csv")
    assert list(summary["ok"]) == [3, 3]
    assert "[tiny](tiny/study.md)" in (tmp_path / "index.md").read_text()

    # rerunning the same study is a resume: nothing new is trained or written
    S.run_study(tiny, ["torch"], tmp_path, threads=1, progress=False)
    assert len(read_csv(tmp_path / "tiny" / "runs.csv", RUN_COLUMNS)) == len(runs)


def test_old_runs_csv_is_upgraded_on_append(tmp_path):
    old_columns = [c for c in RUN_COLUMNS if c not in ("epochs_planned", "output_grad_init", "output_grad")]
    path = tmp_path / "runs.csv"
    pd.DataFrame([{"run_id": "old", "task": "t", "backend": "torch", "seed": 0, "epoch": 1, "test_acc": 0.5}]
                 ).reindex(columns=old_columns).to_csv(path, index=False)
    append_rows(path, [{"run_id": "new", "task": "t", "backend": "torch", "seed": 1, "epoch": 1,
                        "output_grad": 0.25}], RUN_COLUMNS)
    frame = read_csv(path, RUN_COLUMNS)
    assert list(frame.columns) == RUN_COLUMNS and list(frame["run_id"]) == ["old", "new"]
    assert frame["test_acc"].iloc[0] == 0.5 and frame["output_grad"].iloc[1] == 0.25
    assert path.read_text().splitlines()[0] == ",".join(RUN_COLUMNS)


@pytest.mark.slow
@pytest.mark.e2e
def test_study_cli_errors_are_one_line(tmp_path):
    proc = run_cli("study", "no-such-study", "--out", tmp_path)
    assert proc.returncode == 2 and "unknown study 'no-such-study'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("study", "lenet", "--datasets", "cifar10", "--out", tmp_path)
    assert proc.returncode == 2 and "has no dataset cifar10" in proc.stderr
    proc = run_cli("study", "lenet", "--report-only", "--out", tmp_path)
    assert proc.returncode == 2 and "no runs yet" in proc.stderr
    listing = run_cli("study", "list")
    assert listing.returncode == 0 and all(name in listing.stdout for name in STUDIES)


@pytest.mark.slow
@pytest.mark.e2e
def test_study_interrupted_by_sigterm_resumes_without_duplicates(tmp_path):
    """A real study (lenet on the real MNIST 5k subset, 2 seeds, torch) stopped by SIGTERM after its first run."""
    import signal
    import subprocess
    import sys
    import time
    from tests.conftest import ROOT
    args = [sys.executable, "-m", "dualbench.cli", "study", "lenet", "--datasets", "mnist5k", "--backend", "torch",
            "--seeds", "0,1", "--threads", "1", "--no-progress", "--out", str(tmp_path)]
    csv_path = tmp_path / "lenet" / "runs.csv"
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    start = time.time()
    while not (csv_path.exists() and pd.read_csv(csv_path)["test_acc"].notna().sum() >= 1):
        assert proc.poll() is None and time.time() - start < 240, "the study ended before it could be stopped"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    first = read_csv(csv_path, RUN_COLUMNS)
    finished = first[first["test_acc"].notna()]
    assert len(finished) == 1 and len(first) == 5   # the finished run only, all 5 epochs of it
    rerun = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    final = read_csv(csv_path, RUN_COLUMNS)
    assert sorted(final[final["test_acc"].notna()]["seed"]) == [0, 1] and len(final) == 10
    assert (tmp_path / "lenet" / "study.md").exists()


@pytest.mark.slow
def test_a_study_without_claims_still_writes_readable_tables(tmp_path, monkeypatch):
    """claims.csv of a study with no comparison is its header, not an empty file pandas cannot read."""
    no_claims = Study("none", "no claims", "001", arms=(Arm("mnist-linear-mse"),),
                      data=(DataPlan("mnist", fallback="synthetic-mnist", limit_train=200, epochs=1, seeds=(0,),
                                     why="test data"),), comparisons=())
    monkeypatch.setitem(STUDIES, "none", no_claims)
    assert S.run_study(no_claims, ["torch"], tmp_path, threads=1, progress=False) == 0
    S.build_section(no_claims, tmp_path)
    claims = pd.read_csv(tmp_path / "none" / "claims.csv")
    assert len(claims) == 0 and list(claims.columns) == S.CLAIM_COLUMNS
    assert list(pd.read_csv(tmp_path / "none" / "backends.csv").columns) == S.BACKEND_COLUMNS
