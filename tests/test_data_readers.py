"""Readers against files in the real on-disk formats, including corrupted, hostile and empty ones."""
import gzip
import io
import json
import os
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dualbench.common.data import cifar, food, idx, jsongz
from dualbench.common.data.sources import load_dataset
from dualbench.common.data.synth import synthetic_arrays, write_jpegs, write_synthetic
from dualbench.common.errors import DataError

ROOT = Path(__file__).resolve().parent.parent


def expect_data_error(fn, path, *words):
    with pytest.raises(DataError) as info:
        fn()
    assert info.value.path == str(path)
    for w in words:
        assert w in info.value.problem
    return info.value


# --- IDX -------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_roundtrip_raw_and_gzip(tmp_path, suffix):
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = np.arange(7, dtype=np.uint8)
    images_path, labels_path = tmp_path / f"images-idx3-ubyte{suffix}", tmp_path / f"labels-idx1-ubyte{suffix}"
    idx.write_idx(images_path, images)
    idx.write_idx(labels_path, labels)
    assert (images_path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    x, y = idx.read_idx_pair(images_path, labels_path)
    assert x.shape == (7, 1, 28, 28) and x.dtype == np.uint8 and np.array_equal(x[:, 0], images)
    assert y.dtype == np.int64 and np.array_equal(y, labels)


def test_idx_bad_inputs(tmp_path):
    good = tmp_path / "img.gz"
    idx.write_idx(good, np.zeros((3, 28, 28), np.uint8))
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(good.read_bytes()[:-20])
    expect_data_error(lambda: idx.read_idx(truncated, idx.IMAGES_MAGIC), truncated, "gzip")
    expect_data_error(lambda: idx.read_idx(good, idx.LABELS_MAGIC), good, "wrong IDX magic 2051")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    expect_data_error(lambda: idx.read_idx(empty, idx.IMAGES_MAGIC), empty, "too short")
    short = tmp_path / "short"
    short.write_bytes(gzip.decompress(good.read_bytes())[:-5])
    expect_data_error(lambda: idx.read_idx(short, idx.IMAGES_MAGIC), short, "size mismatch")
    labels = tmp_path / "labels"
    idx.write_idx(labels, np.zeros(4, np.uint8))
    expect_data_error(lambda: idx.read_idx_pair(good, labels), labels, "4 labels for 3 images")


def test_idx_label_outside_classes_names_the_file(tmp_path):
    write_synthetic("synthetic-mnist", tmp_path, n_train=20, n_test=10)
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    idx.write_idx(bad, np.full(10, 10, np.uint8))
    expect_data_error(lambda: load_dataset("mnist", tmp_path), bad, "label 10 outside 0..9")


def test_fashion_mnist_reads_fast():
    """Full Fashion-MNIST (60k + 10k, gzip) into arrays in well under a second."""
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file():
        pytest.skip("dataset-fashion-mnist not installed")
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        ds = load_dataset("fashion-mnist")
        best = min(best, time.perf_counter() - start)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert np.bincount(ds.train_y).tolist() == [6000] * 10
    assert best < 1.0, f"reading Fashion-MNIST took {best:.2f} s"


# --- mnist.json.gz ----------------------------------------------------------------------------

def _json_file(path, payload):
    path.write_bytes(gzip.compress(json.dumps(payload).encode()))
    return path


def test_mnist_json_roundtrip_is_exact_uint8(tmp_path):
    x, y = synthetic_arrays(30, 10, (1, 28, 28), seed=3)
    path = tmp_path / "mnist.json.gz"
    jsongz.write_mnist_json(path, {"train": (x, y), "val": (x[:10], y[:10]), "eval": (x[:5], y[:5])})
    payload = json.loads(gzip.decompress(path.read_bytes()))
    assert len(payload) == 3 and len(payload[0][0][0]) == 784
    assert -1.0 <= min(payload[0][0][0]) and max(payload[0][0][0]) <= 1.0   # the course's [-1, 1] floats
    out = jsongz.read_mnist_json(path)
    assert out["train_x"].dtype == np.uint8 and out["train_x"].shape == (30, 1, 28, 28)
    assert np.array_equal(out["train_x"], x) and np.array_equal(out["val_y"], y[:10])
    assert np.array_equal(out["test_x"], x[:5]) and out["test_y"].dtype == np.int64


def test_mnist_json_course_floats_map_back_to_pixels(tmp_path):
    pixels = np.arange(256, dtype=np.float64)
    image = list((pixels / 127.5 - 1.0).tolist()) + [-1.0] * (784 - 256)
    path = _json_file(tmp_path / "c.json.gz", [[[image], [3]], [[image], [1]], [[], []]])
    out = jsongz.read_mnist_json(path)
    assert out["train_x"].reshape(-1)[:256].tolist() == list(range(256))
    assert out["test_x"].shape == (0, 1, 28, 28)


BAD_JSON = [
    ({"train": 1}, "expected a JSON list [train, val, eval]"),
    ([[[], []], [[], []]], "expected a JSON list [train, val, eval]"),
    ([[[[0.0] * 784]], [[], []], [[], []]], "train split: expected [images, labels]"),
    ([[[[0.0] * 784], [1, 2]], [[], []], [[], []]], "1 images but 2 labels"),
    ([[[[0.0] * 783], [1]], [[], []], [[], []]], "784 numbers per image"),
    ([[[["a"] * 784], [1]], [[], []], [[], []]], "train images"),
    ([[[[0.0] * 784], [1]], [[[0.0] * 784], [10]], [[], []]], "val labels 10..10 outside 0..9"),
    ([[[[0.0] * 784], [1.5]], [[], []], [[], []]], "expected integers"),
    ([[[[255.0] * 784], [1]], [[], []], [[], []]], "outside [-1, 1]"),
]


@pytest.mark.parametrize("payload,problem", BAD_JSON)
def test_mnist_json_malformed_structure(tmp_path, payload, problem):
    path = _json_file(tmp_path / "bad.json.gz", payload)
    expect_data_error(lambda: jsongz.read_mnist_json(path), path, problem)


def test_mnist_json_truncated_and_not_json(tmp_path):
    path = _json_file(tmp_path / "m.json.gz", [[[], []]] * 3)
    truncated = tmp_path / "t.json.gz"
    truncated.write_bytes(path.read_bytes()[:-6])
    expect_data_error(lambda: jsongz.read_mnist_json(truncated), truncated, "gzip")
    garbage = tmp_path / "g.json.gz"
    garbage.write_bytes(gzip.compress(b"[[1, 2], oops"))
    expect_data_error(lambda: jsongz.read_mnist_json(garbage), garbage, "not valid JSON")
    empty = tmp_path / "e.json.gz"
    empty.write_bytes(b"")
    expect_data_error(lambda: jsongz.read_mnist_json(empty), empty, "not valid JSON")


def test_mnist_json_val_split_is_used_and_cached(tmp_path, monkeypatch):
    from dualbench.common.data.split import prepare_splits
    from dualbench.common.tasks import get_task
    monkeypatch.setenv("DUALBENCH_DATA", str(tmp_path / "cache"))
    where = write_synthetic("mnist-json", tmp_path / "src", n_train=60, n_test=20)
    first = load_dataset("mnist-json", where)
    assert first.val_x.shape == (20, 1, 28, 28) and first.val_y.dtype == np.int64
    splits = prepare_splits(first, get_task("mnist-mlp"))   # val_fraction 1/6, but the file ships its own
    assert len(splits.train_y) == 60 and len(splits.val_y) == 20
    # the second read comes from the array cache keyed by the file's sha256: no JSON parsing
    monkeypatch.setattr(jsongz, "read_mnist_json", lambda *a: pytest.fail("parsed the JSON again"))
    again = load_dataset("mnist-json", where)
    assert np.array_equal(again.train_x, first.train_x) and again.sha256 == first.sha256


# --- CIFAR-10 python batches ------------------------------------------------------------------

def _cifar_dir(tmp_path, n_train=25, n_test=10):
    x, y = synthetic_arrays(n_train, 10, (3, 32, 32), seed=5)
    tx, ty = synthetic_arrays(n_test, 10, (3, 32, 32), seed=6)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir(parents=True)
    cifar.write_cifar_dir(d, x, y, tx, ty)
    return d, x, y, tx, ty


def test_cifar_roundtrip_and_layout(tmp_path):
    d, x, y, tx, ty = _cifar_dir(tmp_path)
    out = cifar.read_cifar_dir(d)
    assert np.array_equal(out["train_x"], x) and np.array_equal(out["train_y"], y)
    assert np.array_equal(out["test_x"], tx) and out["train_y"].dtype == np.int64
    # the on-disk row is 1024 red, then green, then blue values, as in the official files
    raw = pickle.loads((d / "data_batch_1").read_bytes(), encoding="latin1")
    assert raw["data"].shape[1] == 3072 and np.array_equal(raw["data"][0, :1024], x[0, 0].reshape(-1))


def test_cifar_accepts_bytes_keys(tmp_path):
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 9]}, protocol=2))
    x, y = cifar.read_batch(path)
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [1, 9]


class RunsCode:
    """Unpickling this calls os.mkdir(marker): the classic code-execution payload."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_cifar_hostile_pickle_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": RunsCode(marker), "labels": []}, protocol=2))
    expect_data_error(lambda: cifar.read_batch(path), path, "refused global", "posix.mkdir")
    assert not marker.exists()
    evil = tmp_path / "evil"
    evil.write_bytes(b"cbuiltins\neval\n(S'__import__(\"os\").mkdir(\"" + str(marker).encode() + b"\")'\ntR.")
    expect_data_error(lambda: cifar.read_batch(evil), evil, "refused global 'builtins.eval'")
    assert not marker.exists()


@pytest.mark.parametrize("batch,problem", [
    ([1, 2, 3], "expected a pickled dict"),
    ({"data": np.zeros((2, 3072), np.uint8)}, "missing 'data' or 'labels'"),
    ({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, "uint8 N x 3072"),
    ({"data": np.zeros((2, 1000), np.uint8), "labels": [0, 1]}, "uint8 N x 3072"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "2 images but 1 labels"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, "labels 0..10 outside 0..9"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": ["a", "b"]}, "list of integers"),
])
def test_cifar_malformed_batches(tmp_path, batch, problem):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=2))
    expect_data_error(lambda: cifar.read_batch(path), path, problem)


def test_cifar_truncated_empty_and_missing(tmp_path):
    d, *_ = _cifar_dir(tmp_path)
    whole = (d / "data_batch_3").read_bytes()
    (d / "data_batch_3").write_bytes(whole[: len(whole) // 2])
    expect_data_error(lambda: cifar.read_cifar_dir(d), d / "data_batch_3", "pickle")
    (d / "data_batch_3").write_bytes(b"")
    expect_data_error(lambda: cifar.read_cifar_dir(d), d / "data_batch_3", "pickle")
    (d / "data_batch_3").unlink()
    expect_data_error(lambda: cifar.read_cifar_dir(d), d / "data_batch_3", "missing")


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_cifar_archive_extracts_only_the_batches(tmp_path):
    d, x, *_ = _cifar_dir(tmp_path / "src")
    members = {f"cifar-10-batches-py/{p.name}": p.read_bytes() for p in d.iterdir()}
    members["../escape"] = b"outside"
    members["cifar-10-batches-py/readme.html"] = b"<html>"
    archive = _tar(tmp_path / "cifar-10-python.tar.gz", members)
    out = tmp_path / "out"
    out.mkdir()
    cifar.extract_batches(archive, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in d.iterdir())
    assert not (tmp_path / "escape").exists()
    assert np.array_equal(cifar.read_cifar_dir(out)["train_x"], x)

    truncated = tmp_path / "trunc.tar.gz"
    truncated.write_bytes(archive.read_bytes()[:400])
    out2 = tmp_path / "out2"
    out2.mkdir()
    expect_data_error(lambda: cifar.extract_batches(truncated, out2), truncated, "tar.gz")
    del members["cifar-10-batches-py/test_batch"]
    partial = _tar(tmp_path / "partial.tar.gz", members)
    expect_data_error(lambda: cifar.extract_batches(partial, tmp_path / "out3"), partial, "lacks", "test_batch")


def test_cifar2_filtering_relabels_airplane_bird(tmp_path, monkeypatch):
    from dualbench.common.data.split import prepare_splits
    from dualbench.common.tasks import TASKS
    task = next((t for t in TASKS.values() if t.data.classes == (0, 2)), None)
    if task is None:
        pytest.skip("no CIFAR airplane/bird task registered")
    monkeypatch.setenv("DUALBENCH_DATA", str(tmp_path / "cache"))
    ds = load_dataset("synthetic-cifar10")
    splits = prepare_splits(ds, task)
    assert set(np.unique(splits.train_y)) == {0, 1}
    n = len(splits.train_y) + (len(splits.val_y) if splits.val_y is not None else 0)
    assert n == int(np.isin(ds.train_y, (0, 2)).sum())
    assert splits.train_x.dtype == np.float32 and splits.train_x.shape[1:] == (3, 32, 32)


# --- Food-11 folders --------------------------------------------------------------------------

def _food_dir(root, per_split=4, size=(60, 50)):
    rng = np.random.default_rng(1)
    for folder in ("training", "validation", "evaluation"):
        x = rng.integers(0, 256, (per_split, 3, *size), dtype=np.uint8)
        write_jpegs(root / folder, x, np.arange(per_split) % 11)
    return root


def test_food_decodes_resizes_like_pillow(tmp_path):
    root = _food_dir(tmp_path / "food")
    out = food.read_food_folder(root, (128, 128), progress=False)
    assert out["train_x"].shape == (4, 3, 128, 128) and out["train_x"].dtype == np.uint8
    assert out["val_y"].tolist() == [0, 1, 2, 3] and out["test_y"].dtype == np.int64
    with Image.open(root / "training" / "2_0.jpg") as im:
        expected = np.asarray(im.convert("RGB").resize((128, 128), Image.BILINEAR)).transpose(2, 0, 1)
    assert np.array_equal(out["train_x"][2], expected)


def test_food_orders_numerically_and_skips_hidden(tmp_path):
    root = _food_dir(tmp_path / "food", per_split=1)
    x = np.zeros((12, 3, 8, 8), np.uint8)
    write_jpegs(root / "training", x, np.full(12, 10))
    (root / "training" / ".DS_Store").write_bytes(b"\0junk")
    files = [p.name for p, _ in food.list_images(root)["train"]]
    assert files[:3] == ["0_0.jpg", "10_0.jpg", "10_1.jpg"] and files[-1] == "10_11.jpg"


@pytest.mark.parametrize("name,content,problem", [
    ("3_7.jpg", b"this is not a jpeg", "not a readable image"),
    ("3_8.jpg", b"", "not a readable image"),
    ("readme.txt", b"hello", "expected files named <label>_<n>.jpg"),
    ("11_0.jpg", None, "label 11 outside 0..10"),
])
def test_food_bad_files(tmp_path, name, content, problem):
    root = _food_dir(tmp_path / "food")
    bad = root / "validation" / name
    if content is None:
        Image.new("RGB", (10, 10)).save(bad, format="JPEG")
    else:
        bad.write_bytes(content)
    expect_data_error(lambda: food.read_food_folder(root, (128, 128), progress=False), bad, problem)


def test_food_truncated_jpeg(tmp_path):
    root = _food_dir(tmp_path / "food")
    bad = root / "training" / "1_0.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    expect_data_error(lambda: food.read_food_folder(root, (128, 128), progress=False), bad, "not a readable image")


def test_food_missing_or_empty_split(tmp_path):
    root = _food_dir(tmp_path / "food")
    for p in (root / "evaluation").iterdir():
        p.unlink()
    expect_data_error(lambda: food.list_images(root), root / "evaluation", "no images")
    (root / "evaluation").rmdir()
    expect_data_error(lambda: food.list_images(root), root / "evaluation", "missing")


def test_food_array_cache_skips_decoding_and_follows_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("DUALBENCH_DATA", str(tmp_path / "cache"))
    root = _food_dir(tmp_path / "food")
    first = load_dataset("food11", root, progress=False)
    assert first.train_x.shape == (4, 3, 128, 128) and first.val_x.shape == (4, 3, 128, 128)
    real_decode = food.decode_image
    monkeypatch.setattr(food, "decode_image", lambda *a: pytest.fail("decoded again despite the cache"))
    second = load_dataset("food11", root, progress=False)
    assert np.array_equal(second.train_x, first.train_x) and second.sha256 == first.sha256
    # changing one image changes the checksum, so the folder is decoded again
    Image.new("RGB", (30, 30), (255, 0, 0)).save(root / "training" / "0_0.jpg", format="JPEG")
    monkeypatch.setattr(food, "decode_image", real_decode)
    third = load_dataset("food11", root, progress=False)
    assert third.sha256 != first.sha256 and not np.array_equal(third.train_x[0], first.train_x[0])
    assert (third.train_x[0, 0] > 200).all()   # the red image, resized


# --- every synthetic set through the real readers ---------------------------------------------

@pytest.mark.parametrize("name,shape,classes", [
    ("synthetic-mnist", (1, 28, 28), 10), ("synthetic-mnist-json", (1, 28, 28), 10),
    ("synthetic-cifar10", (3, 32, 32), 10), ("synthetic-food11", (3, 128, 128), 11)])
def test_synthetic_sets_load_in_their_real_format(name, shape, classes):
    ds = load_dataset(name, progress=False)
    assert ds.synthetic and ds.train_x.dtype == np.uint8 and ds.train_x.shape[1:] == shape
    assert ds.train_y.dtype == np.int64 and set(np.unique(ds.train_y)) == set(range(classes))
    assert len(ds.sha256) == 64 and Path(ds.source).exists()
    # learnable: each class mean differs from the others far more than within-class noise
    means = np.stack([ds.train_x[ds.train_y == k].mean(0) for k in range(classes)]).reshape(classes, -1)
    gaps = np.abs(means[:, None] - means[None]).mean(-1) + np.eye(classes) * 1e9
    assert gaps.min() > 5


@pytest.mark.parametrize("name,missing", [("mnist", "train-images-idx3-ubyte.gz"), ("mnist-json", "mnist.json.gz"),
                                          ("cifar10", "data_batch_1"), ("food11", "training")])
def test_empty_folder_names_the_missing_file(tmp_path, name, missing):
    expect_data_error(lambda: load_dataset(name, tmp_path, progress=False), tmp_path / missing, "missing")
