"""Model pairs from outside: torchvision vs paddle.vision models nobody here wrote, a pair written
separately with other names, broken copies, checkpoint conversion, and the errors a user can make."""
import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import run_cli, run_main

pytest.importorskip("torch")
pytest.importorskip("paddle")
pytest.importorskip("torchvision")

from dualbench import compare_models  # noqa: E402

PAIRS = "tests/pair_models.py"
RESNET = ["--torch", "torchvision.models:resnet18:{\"num_classes\": 10}",
          "--paddle", "paddle.vision.models:resnet18:{\"num_classes\": 10}"]


def one_line_error(proc):
    lines = proc.stderr.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("dualbench: error:") and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory):
    """torchvision vs paddle.vision resnet18, matched automatically, checked in full."""
    out = tmp_path_factory.mktemp("resnet18")
    proc = run_main("parity", *RESNET, "--input", "2,3,224,224", "--out", out)
    return proc, out


@pytest.mark.slow
@pytest.mark.e2e
def test_resnet18_pair_passes_after_automatic_matching(resnet_run):
    proc, out = resnet_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "resnet18: pass" in proc.stdout
    mapping = json.loads((out / "mapping.json").read_text())
    tensors = [t for m in mapping["modules"] for t in m["tensors"]]
    assert len(tensors) == 102 and not any(u["tensors"] for side in ("torch", "paddle")
                                           for u in mapping["unmatched"][side])
    assert {t["transform"] for t in tensors if t["torch"] == "fc.weight"} == {"transpose"}
    assert {t["paddle"] for t in tensors if t["torch"] == "bn1.running_var"} == {"bn1._variance"}
    # a ReLU module called twice per block is matched call by call
    relu = next(m for m in mapping["modules"] if m["torch"] == "layer1.0.relu")
    assert relu["calls"] == [[1, 1], [2, 2]]
    frame = pd.read_csv(out / "parity.csv")
    checks = set(zip(frame.check, frame["mode"]))
    assert {("weights", "torch>paddle>torch"), ("forward", "eval"), ("forward", "train"), ("grad", "float32"),
            ("train", "float32")} <= checks
    assert (frame[frame.check == "weights"].max_abs == 0).all()
    assert not frame.status.isin(["FAIL", "error"]).any()
    # at this size torch's own float32 gradients depart from its float64 ones by percents: the float64
    # reference shows those gaps are rounding, tensor by tensor
    noise = frame[(frame.status == "noise") & (frame.check == "grad")]
    assert len(noise) and noise.cause.str.contains("torch departs from its own float64 result").all()
    assert "time: building" in proc.stdout
    assert frame[(frame.check == "train") & (frame["mode"] == "float32")].step.max() == 3


def test_precision_attribution_tells_rounding_from_a_formula_difference():
    from dualbench.parity.training import attribute
    rng = np.random.default_rng(0)
    exact = rng.standard_normal(1000)

    def rows():
        return [{"status": "FAIL", "within": False, "cause": ""} for _ in range(2)]
    # each side's float32 result departs from its own float64 one by about 1e-3; float64 results agree
    t32, p32 = exact + 1e-3 * rng.standard_normal(1000), exact + 1e-3 * rng.standard_normal(1000)
    row32, row64 = rows()
    attribute(row32, row64, (t32, p32, exact, exact + 1e-12))
    assert row32["status"] == row64["status"] == "noise" and "torch departs" in row32["cause"]
    # a formula difference: the same 1e-3 gap in float64 (it does not shrink with precision)
    row32, row64 = rows()
    attribute(row32, row64, (t32, p32 + 5e-3, exact, exact + 5e-3))
    assert row32["status"] == row64["status"] == "FAIL"
    # a float32 result far from its own float64 one, the float64 results agreeing: the formulas are the
    # same, and the report says that float32 is unreliable there
    row32, _ = rows()
    attribute(row32, None, (exact + 1e-9, exact + 10.0, exact, exact))
    assert row32["status"] == "noise" and "unreliable" in row32["cause"]


@pytest.mark.slow
def test_vgg11_pair_passes(tmp_path):
    """133 million parameters, a 103-million-element Linear weight: one training step exercises the
    big-model paths (chunked comparisons, tile-wise transposes) as well as three."""
    proc = run_main("parity", "--torch", "torchvision.models:vgg11", "--paddle", "paddle.vision.models:vgg11",
                    "--input", "2,3,32,32", "--steps", "1", "--out", tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "vgg11: pass" in proc.stdout
    mapping = json.loads((tmp_path / "mapping.json").read_text())
    assert sum(len(m["tensors"]) for m in mapping["modules"]) == 22


def test_pair_written_separately_is_matched_without_names(tmp_path):
    proc = run_main("parity", "--torch", f"{PAIRS}:torch_net", "--paddle", f"{PAIRS}:paddle_net",
                   "--input", "4,3,8,8", "--out", tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    mapping = json.loads((tmp_path / "mapping.json").read_text())
    pairs = {m["torch"]: m["paddle"] for m in mapping["modules"]}
    assert pairs["stem"] == "features.0" and pairs["norm"] == "features.1"
    assert pairs["block.0"] == "res_conv" and pairs["block.1"] == "res_bn" and pairs["head"] == "classifier"
    assert pairs["drop"] == "dropout"
    # torch's ReLU module (called twice) and paddle's pooling module have no counterpart: functional on the
    # other side; they are listed, not paired by guesswork
    assert {u["module"] for u in mapping["unmatched"]["torch"]} == {"act"}
    assert {u["module"] for u in mapping["unmatched"]["paddle"]} == {"pool"}
    assert all(not u["tensors"] for side in ("torch", "paddle") for u in mapping["unmatched"][side])


def test_compare_models_in_a_users_test():
    import torch
    from tests import pair_models
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    torch_model = pair_models.torch_net()
    before = {k: v.clone() for k, v in torch_model.state_dict().items()}
    result = compare_models(torch_model, pair_models.paddle_net(), x, train_steps=2)
    assert result.passed and bool(result), result.summary
    assert set(result.rows.check) >= {"weights", "forward", "loss", "grad", "train"}
    assert all(torch.equal(before[k], v) for k, v in torch_model.state_dict().items())   # the caller's model untouched
    broken = compare_models(pair_models.torch_net, pair_models.paddle_net_bn_eps, x, train_steps=1, float64=False)
    assert not broken.passed and broken.result == "FAIL"
    first = broken.first_failure
    assert first["check"] == "forward" and first["name"] == "block.1" and first["paddle_name"] == "res_bn"


@pytest.mark.parametrize("builder, module", [("paddle_resnet18_bn_eps", "layer2.0.bn1"),
                                             ("paddle_resnet18_ceil_pool", "maxpool")])
@pytest.mark.slow
def test_broken_copy_of_paddle_resnet18_fails_at_the_broken_module(builder, module):
    import torchvision

    from tests import pair_models
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    result = compare_models(lambda: torchvision.models.resnet18(num_classes=10), getattr(pair_models, builder), x,
                            train_steps=1, float64=False)
    assert result.result == "FAIL"
    first = result.first_failure
    assert first["check"] == "forward" and first["mode"] == "eval" and first["name"] == module
    if builder.endswith("ceil_pool"):
        assert "ceil_mode" in first["cause"]


@pytest.mark.slow
@pytest.mark.e2e
def test_squeezenet_pair_differs_at_its_ceil_mode_pooling_and_its_dropout(tmp_path):
    """torchvision's squeezenet1_0 pools with ceil_mode=True, paddle.vision's does not; and paddle.vision's
    classifier dropout uses downscale_in_infer: two independent differences, both named in one run (the
    command in its own process: exit code 1, the verdict on stdout)."""
    proc = run_cli("parity", "--torch", "torchvision.models:squeezenet1_0", "--paddle",
                   "paddle.vision.models:squeezenet1_0", "--input", "2,3,64,64", "--steps", "1", "--no-float64",
                   "--out", tmp_path)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr
    assert "squeezenet1_0: FAIL at forward/eval features.6" in proc.stdout and "pooling ceil_mode" in proc.stdout
    # and, independently, paddle.vision's dropout scales its output in eval mode (mode='downscale_in_infer'):
    # fed torch's input, that module alone differs too, and the replay names why
    also = next(line for line in proc.stdout.splitlines() if line.strip().startswith("also at forward/eval classifier.0"))
    assert "an independent difference" in also and "dropout scaling mode" in also


def test_vacuous_outputs_are_flagged_and_random_weights_resolve_it(tmp_path):
    args = ["parity", "--torch", f"{PAIRS}:zero_head_torch", "--paddle", f"{PAIRS}:paddle_net", "--input",
            "4,3,8,8", "--steps", "1"]
    proc = run_main(*args, "--out", tmp_path / "own")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr
    assert "inconclusive" in proc.stdout and "--weights random" in proc.stdout
    proc = run_main(*args, "--weights", "random", "--out", tmp_path / "random")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert ": pass" in proc.stdout


def test_mapping_file_round_trip_and_errors(tmp_path):
    pair = ["--torch", f"{PAIRS}:torch_net", "--paddle", f"{PAIRS}:paddle_net", "--input", "4,3,8,8", "--steps", "1"]
    assert run_main("parity", *pair, "--out", tmp_path / "a").returncode == 0
    mapping = tmp_path / "a" / "mapping.json"
    proc = run_main("parity", *pair, "--mapping", mapping, "--out", tmp_path / "b")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    # an edit that swaps two BatchNorms' tensors: the weights fit, the computation does not (once
    # their values differ: random canonical weights, not the default 1 and 0 of both)
    data = json.loads(mapping.read_text())
    bns = [m for m in data["modules"] if m["kind"] == "bn2d"]
    for t0, t1 in zip(bns[0]["tensors"], bns[1]["tensors"]):
        t0["paddle"], t1["paddle"] = t1["paddle"], t0["paddle"]
    swapped = tmp_path / "swapped.json"
    swapped.write_text(json.dumps(data))
    proc = run_main("parity", *pair, "--mapping", swapped, "--weights", "random", "--out", tmp_path / "c")
    assert proc.returncode == 1 and "FAIL at forward/eval norm" in proc.stdout, proc.stdout[-2000:]
    data["modules"][0]["paddle"] = "no.such.layer"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    proc = run_main("parity", *pair, "--mapping", bad, "--out", tmp_path / "d")
    assert proc.returncode == 2 and one_line_error(proc) and str(bad) in proc.stderr and "no.such.layer" in proc.stderr
    bad.write_text("{not json")
    proc = run_main("parity", *pair, "--mapping", bad, "--out", tmp_path / "e")
    assert proc.returncode == 2 and one_line_error(proc) and str(bad) in proc.stderr


def test_different_structures_get_a_one_line_error_pointing_to_the_mapping(tmp_path):
    proc = run_main("parity", "--torch", "torchvision.models:resnet18", "--paddle", "paddle.vision.models:resnet34",
                   "--input", "2,3,32,32", "--out", tmp_path)
    assert proc.returncode == 2 and one_line_error(proc), proc.stderr
    assert "differ in structure" in proc.stderr and str(tmp_path / "mapping.json") in proc.stderr
    mapping = json.loads((tmp_path / "mapping.json").read_text())
    assert any(u["tensors"] for u in mapping["unmatched"]["paddle"])   # resnet34's extra blocks, with shapes
    assert not (tmp_path / "parity.csv").exists()


@pytest.mark.parametrize("spec, words", [
    ("no_such_package.models:net", "cannot import no_such_package"),
    ("torchvision.models:no_such_net", "has no attribute 'no_such_net'"),
    (f"{PAIRS}:not_a_model", "returned a builtins.int, not a torch.nn.Module"),
    (f"{PAIRS}:paddle_net", "returned a paddle.nn.Layer, not a torch.nn.Module"),
    ("torchvision.models:resnet18:{num_classes: 10}", "not JSON"),
    ("torchvision.models:resnet18:{\"no_such_argument\": 1}", "failed (TypeError"),
    ("tests/missing_file.py:net", "no such file"),
    ("resnet18", "expected MODULE:CALLABLE"),
])
def test_bad_spec_is_a_one_line_error(spec, words, tmp_path):
    proc = run_main("parity", "--torch", spec, "--paddle", "paddle.vision.models:resnet18", "--input", "2,3,32,32",
                   "--out", tmp_path)
    assert proc.returncode == 2 and one_line_error(proc), proc.stderr
    assert words in proc.stderr and "--torch" in proc.stderr


@pytest.mark.slow
@pytest.mark.e2e
def test_bad_spec_is_a_one_line_error_from_the_command(tmp_path):
    proc = run_cli("parity", "--torch", "no_such_package.models:net", "--paddle", "paddle.vision.models:resnet18",
                   "--input", "2,3,32,32", "--out", tmp_path)
    assert proc.returncode == 2 and one_line_error(proc), proc.stderr
    assert "cannot import no_such_package" in proc.stderr


def test_inputs_from_an_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "batch.npz"
    np.savez(path, x=rng.standard_normal((4, 3, 8, 8)).astype(np.float32), y=np.array([0, 1, 2, 3]))
    proc = run_main("parity", "--torch", f"{PAIRS}:torch_net", "--paddle", f"{PAIRS}:paddle_net", "--inputs", path,
                   "--steps", "1", "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    path.write_bytes(b"not a zip")
    proc = run_main("parity", "--torch", f"{PAIRS}:torch_net", "--paddle", f"{PAIRS}:paddle_net", "--inputs", path,
                   "--out", tmp_path / "out2")
    assert proc.returncode == 2 and one_line_error(proc) and str(path) in proc.stderr


# ---------------------------------------------------------------------------------------------
# Checkpoint conversion


def outputs_of(framework, checkpoint, x):
    """Eval outputs of a torchvision/paddle.vision resnet18 loaded from a checkpoint with the framework's own
    loader (not dualbench's)."""
    if framework == "torch":
        import torch
        import torchvision
        model = torchvision.models.resnet18(num_classes=10)
        if str(checkpoint).endswith(".safetensors"):
            from safetensors.torch import load_file
            model.load_state_dict(load_file(str(checkpoint)))
        else:
            model.load_state_dict(torch.load(checkpoint, weights_only=True))
        model.eval()
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()
    import paddle
    model = paddle.vision.models.resnet18(num_classes=10)
    model.set_state_dict(paddle.load(str(checkpoint)))
    model.eval()
    with paddle.no_grad():
        return model(paddle.to_tensor(x)).numpy()


@pytest.mark.slow
def test_convert_torch_checkpoint_to_paddle_and_back(tmp_path):
    import torch
    import torchvision
    torch.manual_seed(3)
    model = torchvision.models.resnet18(num_classes=10)
    for m in model.modules():                        # a "trained" state: BatchNorm statistics moved
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    source = tmp_path / "model.pt"
    torch.save(model.state_dict(), source)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)

    target = tmp_path / "model.pdparams"
    proc = run_main("convert", *RESNET, "--from", source, "--to", target, "--input", "2,3,64,64")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "converted 102 tensors" in proc.stdout
    expected = outputs_of("torch", source, x)
    np.testing.assert_allclose(outputs_of("paddle", target, x), expected, rtol=0, atol=1e-4)

    back = tmp_path / "back.pt"
    proc = run_main("convert", *RESNET, "--from", target, "--to", back, "--input", "2,3,64,64")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    restored = torch.load(back, weights_only=True)
    assert all(torch.equal(restored[k], v) for k, v in model.state_dict().items() if "num_batches" not in k)

    neutral = tmp_path / "model.safetensors"   # from torch: written in paddle's layout, header says so
    proc = run_main("convert", *RESNET, "--from", source, "--to", neutral, "--input", "2,3,64,64")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from safetensors import safe_open
    with safe_open(str(neutral), "np") as f:
        assert f.metadata()["framework"] == "paddle" and "bn1._variance" in f.keys()
    again = tmp_path / "again.pt"
    proc = run_main("convert", *RESNET, "--from", neutral, "--to", again, "--input", "2,3,64,64")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    np.testing.assert_allclose(outputs_of("torch", again, x), expected, rtol=0, atol=1e-4)


def test_convert_writes_nothing_when_the_check_fails(tmp_path):
    import torch
    from tests import pair_models
    torch.save(pair_models.torch_net().state_dict(), tmp_path / "net.pt")
    pair = ["--torch", f"{PAIRS}:torch_net", "--paddle", f"{PAIRS}:paddle_net_bn_eps"]
    proc = run_main("convert", *pair, "--from", tmp_path / "net.pt", "--to", tmp_path / "net.pdparams",
                   "--input", "4,3,8,8")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "nothing was written" in proc.stdout and "block.1" in proc.stdout
    assert not (tmp_path / "net.pdparams").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["net.pt"]


@pytest.mark.parametrize("problem", ["missing", "garbage", "other_model", "same_framework"])
def test_convert_bad_input_is_a_one_line_error(problem, tmp_path):
    import torch
    from tests import pair_models
    source, target = tmp_path / "net.pt", tmp_path / "net.pdparams"
    if problem == "garbage":
        source.write_bytes(b"\x00garbage")
    elif problem == "other_model":
        torch.save(torch.nn.Linear(2, 3).state_dict(), source)
    elif problem == "same_framework":
        torch.save(pair_models.torch_net().state_dict(), source)
        target = tmp_path / "copy.pt"
    proc = run_main("convert", "--torch", f"{PAIRS}:torch_net", "--paddle", f"{PAIRS}:paddle_net", "--from", source,
                   "--to", target, "--input", "4,3,8,8")
    assert proc.returncode == 2 and one_line_error(proc), proc.stderr
    assert not target.exists()
    if problem != "same_framework":
        assert str(source) in proc.stderr
