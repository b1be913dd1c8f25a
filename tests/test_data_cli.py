"""`dualbench data list / prepare / verify / synth / batch-hash` as a new user runs them."""
import gzip
import re

import numpy as np
import pytest

from dualbench.common.data.idx import write_idx
from dualbench.common.data.synth import write_synthetic
from tests.conftest import run_cli


@pytest.fixture
def fresh(tmp_path):
    """An empty private cache, as on a new user's machine."""
    cache = tmp_path / "cache"
    return cache, {"DUALBENCH_DATA": str(cache)}


def one_line_error(proc, *words):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def no_leftovers(cache):
    """No staging folders, temporary files or partial datasets anywhere in the cache."""
    if not cache.exists():
        return True
    return not [p for p in cache.rglob("*") if p.name.startswith(".") or p.name.endswith(".part")]


def test_list_on_a_new_machine(fresh):
    cache, env = fresh
    proc = run_cli("data", "list", env=env)
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout.split("\n\n")[0]
    rows = {line.split()[0]: line for line in table.splitlines()[1:]}
    for name in ("mnist", "fashion-mnist", "mnist5k", "mnist-json", "cifar10", "food11", "synthetic-mnist",
                 "synthetic-mnist-json", "synthetic-cifar10", "synthetic-food11"):
        assert name in rows
    assert "made on first use" in rows["synthetic-cifar10"]
    assert re.search(r"mnist\s+missing", rows["mnist"])
    assert "mnist-lenet" in proc.stdout and str(cache) in proc.stdout


@pytest.mark.slow
@pytest.mark.e2e
def test_synth_prepare_verify_list_cifar(fresh, tmp_path):
    cache, env = fresh
    out = tmp_path / "mycifar"
    proc = run_cli("data", "synth", "cifar10", "--out", out, "--train", 50, "--test", 20, env=env)
    assert proc.returncode == 0, proc.stderr
    batches = sorted(p.name for p in (out / "cifar-10-batches-py").iterdir())
    assert batches == ["batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                       "data_batch_5", "test_batch"]
    proc = run_cli("data", "verify", "cifar10", "--path", out, env=env)
    assert proc.returncode == 0 and "train 50, test 20 images of 3x32x32" in proc.stdout, proc.stderr
    assert "7 of 6" not in proc.stdout and "6 of 6 files differ" in proc.stdout   # not the published files
    proc = run_cli("data", "prepare", "cifar10", "--from", out, "--no-progress", env=env)
    assert proc.returncode == 0 and "copied from" in proc.stdout, proc.stderr
    proc = run_cli("data", "list", env=env)
    assert re.search(r"cifar10\s+present\s+\S*cache/cifar10/cifar-10-batches-py", proc.stdout), proc.stdout
    assert run_cli("data", "verify", "cifar10", env=env).returncode == 0
    # a file changed after prepare is caught, named, and reported in one line
    victim = cache / "cifar10" / "cifar-10-batches-py" / "data_batch_2"
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    one_line_error(run_cli("data", "verify", "cifar10", env=env), str(victim), "changed since it was prepared")
    assert no_leftovers(cache)


@pytest.mark.parametrize("name,reader_name", [("mnist", "mnist"), ("mnist-json", "mnist-json"),
                                              ("food11", "food11"), ("synthetic-cifar10", "cifar10")])
@pytest.mark.slow
@pytest.mark.e2e
def test_synth_then_prepare_from_every_format(fresh, tmp_path, name, reader_name):
    cache, env = fresh
    out = tmp_path / "files"
    assert run_cli("data", "synth", name, "--out", out, "--train", 33, "--test", 11, env=env).returncode == 0
    proc = run_cli("data", "prepare", reader_name, "--from", out, "--no-progress", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "train 33" in proc.stdout and "test 11" in proc.stdout
    proc = run_cli("data", "verify", reader_name, "--no-progress", env=env)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr
    assert no_leftovers(cache)


def test_prepare_synthetic_and_fashion_mnist_present(fresh):
    cache, env = fresh
    proc = run_cli("data", "prepare", "synthetic-cifar10", "--no-progress", env=env)
    assert proc.returncode == 0 and "generated synthetic data" in proc.stdout, proc.stderr
    assert (cache / "synthetic-cifar10" / "cifar-10-batches-py" / "test_batch").is_file()
    proc = run_cli("data", "prepare", "fashion-mnist", env=env)
    if "already on this machine" not in proc.stdout:
        pytest.skip("dataset-fashion-mnist not installed (a download would need the internet)")
    assert proc.returncode == 0 and "/usr/share/datasets/fashion-mnist" in proc.stdout


def test_prepare_without_a_source_says_how(fresh):
    cache, env = fresh
    one_line_error(run_cli("data", "prepare", "food11", env=env), "no official download", "--from")
    one_line_error(run_cli("data", "prepare", "nonsense", env=env), "unknown dataset 'nonsense'")
    one_line_error(run_cli("data", "verify", "mnist-json", env=env), "not on this machine")


def _hostile_cifar(tmp_path, cache_marker):
    out = tmp_path / "hostile"
    write_synthetic("cifar10", out, 10, 5)
    payload = b"cos\nsystem\n(S'mkdir " + str(cache_marker).encode() + b"'\ntR."
    (out / "cifar-10-batches-py" / "data_batch_4").write_bytes(payload)
    return out


def test_prepare_refuses_hostile_pickle_and_keeps_cache_clean(fresh, tmp_path):
    cache, env = fresh
    marker = tmp_path / "pwned"
    out = _hostile_cifar(tmp_path, marker)
    proc = run_cli("data", "prepare", "cifar10", "--from", out, env=env)
    one_line_error(proc, "data_batch_4", "refused global 'os.system'")
    assert not marker.exists() and not (cache / "cifar10").exists() and no_leftovers(cache)


@pytest.mark.parametrize("damage,problem", [
    ("truncated-gzip", "corrupt or truncated gzip"), ("bad-structure", "expected a JSON list"),
    ("non-image", "not a readable image"), ("wrong-magic", "wrong IDX magic"),
    ("count-mismatch", "labels for"), ("bad-archive", "is not the published cifar-10-python.tar.gz")])
def test_prepare_bad_input_one_line_nothing_written(fresh, tmp_path, damage, problem):
    cache, env = fresh
    src = tmp_path / "src"
    if damage in ("truncated-gzip", "bad-structure"):
        name = "mnist-json"
        write_synthetic(name, src, 10, 5)
        path = src / "mnist.json.gz"
        data = path.read_bytes()
        path.write_bytes(data[:-30] if damage == "truncated-gzip" else gzip.compress(b'{"train": []}'))
    elif damage == "non-image":
        name = "food11"
        write_synthetic(name, src, 11, 11)
        path = src / "evaluation" / "5_0.jpg"
        path.write_bytes(b"GIF89a but not really")
    elif damage in ("wrong-magic", "count-mismatch"):
        name = "mnist"
        write_synthetic(name, src, 10, 5)
        path = src / "t10k-labels-idx1-ubyte.gz"
        if damage == "wrong-magic":
            path = src / "train-images-idx3-ubyte.gz"
            path.write_bytes(gzip.compress(b"\0\0\x08\x01" + (10).to_bytes(4, "big") + bytes(10)))
        else:
            write_idx(path, np.zeros(6, np.uint8))
    else:
        name = "cifar10"
        src.mkdir()
        path = src / "cifar-10-python.tar.gz"
        path.write_bytes(gzip.compress(b"not the archive"))
    one_line_error(run_cli("data", "prepare", name, "--from", path if damage in ("bad-structure", "truncated-gzip",
                                                                                   "bad-archive") else src, env=env),
                   str(path), problem)
    assert not (cache / name).exists() and no_leftovers(cache)


def test_run_task_on_synth_files(fresh, tmp_path):
    """`synth` output is usable by the readers a run goes through (--dataset REAL --data-path DIR)."""
    from dualbench.common.data.sources import load_dataset
    from dualbench.common.data.split import prepare_splits
    from dualbench.common.tasks import TASKS
    cache, env = fresh
    out = tmp_path / "food"
    assert run_cli("data", "synth", "food11", "--out", out, "--train", 22, "--test", 11, env=env).returncode == 0
    task = next((t for t in TASKS.values() if t.data.dataset == "food11"), None)
    if task is None:
        pytest.skip("no Food-11 task registered")
    splits = prepare_splits(load_dataset("food11", out, progress=False), task)
    assert splits.train_x.shape == (22, 3, 128, 128) and splits.val_x.shape == (11, 3, 128, 128)


@pytest.mark.parametrize("task,dataset,extra", [("cifar2-net", "synthetic-cifar10",
                                                 ["--limit-train", "150", "--augment", "hflip"])])
@pytest.mark.slow
@pytest.mark.e2e
def test_batch_hash_identical_across_backends(task, dataset, extra):
    """Each backend's native loader, in its own process, yields common's bytes (class filter,
    drop_last and the seeded numpy augmentation included); one task covers it (~4 s)."""
    from dualbench import backends
    from dualbench.common.tasks import TASKS
    if task not in TASKS:
        pytest.skip(f"task {task} not registered")
    names = [n for n in ("torch", "paddle") if backends.is_installed(n)]
    if not names:
        pytest.skip("no backend installed")
    proc = run_cli("data", "batch-hash", "--task", task, "--dataset", dataset, "--backend", ",".join(names), *extra)
    assert proc.returncode == 0, proc.stderr
    hashes = re.findall(r"\b[0-9a-f]{64}\b", proc.stdout)
    assert len(hashes) == 1 + len(names) and len(set(hashes)) == 1, proc.stdout
    assert "identical" in proc.stdout
    header = proc.stdout.splitlines()[0]
    assert "2 batches of 64, 128 samples" in header, header   # drop_last over 150 filtered samples


def test_batch_hash_detects_a_difference(monkeypatch, capsys):
    """The comparison can fail: a loader yielding other bytes is reported, exit 2."""
    from dualbench import cli, data_cmd

    def fake_worker(spec):
        return {"backend": spec["backend"], "version": "x", "sha256": "0" * 64, "batches": 1, "samples": 1,
                "loader_ms_per_batch": 0.0}
    monkeypatch.setattr(data_cmd, "_run_worker", fake_worker)
    monkeypatch.setattr("dualbench.backends.require", lambda n: n)
    assert cli.main(["data", "batch-hash", "--task", "mnist-lenet", "--dataset", "synthetic-mnist",
                     "--backend", "torch"]) == 2
    assert "batches differ: torch" in capsys.readouterr().err


def test_pickle_module_never_used_plainly_for_reading():
    """Readers go through dualbench.common.safepickle; plain pickle.load(s) would run code."""
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    for path in list((root / "common" / "data").glob("*.py")) + [root / "benchmarks" / "data_cmd.py"]:
        text = path.read_text()
        assert not re.search(r"(?<!safe)pickle\.loads?\(|\bUnpickler\(", text), path


def test_synth_files_stay_labelled_synthetic_under_a_real_name(tmp_path):
    from dualbench.common.data.sources import load_dataset
    out = tmp_path / "cifar"
    proc = run_cli("data", "synth", "cifar10", "--out", out, "--train", "50", "--test", "20")
    assert proc.returncode == 0, proc.stderr
    assert load_dataset("cifar10", out / "cifar-10-batches-py", progress=False).synthetic
