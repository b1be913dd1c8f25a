"""`dualbench port FILE.py:CALLABLE`: PaConvert on a torch file written here, then the parity check of the pair.

The torch models are written by the tests (tmp_path) and converted by the PaConvert the extra dualbench[port]
installs (3.2.1; `make setup` and CI install it); nobody hand-writes their paddle side. Four tests use a stand-in
PaConvert of another release that writes that release's recorded output, to reach what 3.2.1 never writes
(paddle.nn.MaxPool2d, paddle.compat.nn.Linear, paddle.compat.nn.MultiheadAttention).
"""
import json
import os
import textwrap

import pytest

from tests.conftest import run_cli, run_main

from dualbench.common.errors import UserError
from dualbench.port.check import missing_api
from dualbench.port.convert import TESTED_RELEASE, find_unconverted, require_paconvert


def installed_paconvert():
    try:
        return require_paconvert()
    except UserError:
        return None


# The tests check what PaConvert 3.2.1 writes: another release (or none) skips them.
needs_paconvert = pytest.mark.skipif(installed_paconvert() != TESTED_RELEASE,
                                     reason=f"needs PaConvert {TESTED_RELEASE}: pip install 'dualbench[port]'")

CNN = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


class SmallCNN(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16, momentum=0.2)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * 4 * 4, classes)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))


def build():
    return SmallCNN()
'''

LSTM = '''
import torch.nn as nn


class Tagger(nn.Module):
    def __init__(self, features=6, hidden=8, classes=4):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1, :])
'''

MULTIHEAD = '''
import torch.nn as nn


class AttnNet(nn.Module):
    def __init__(self, dim=8, heads=2, classes=3):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        y, _ = self.attn(x, x, x)
        return self.head(self.norm(x + y).mean(dim=1))
'''

ENCODER = '''
import torch.nn as nn


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.layer(x).mean(dim=1))
'''

# Attention written out: three Linear projections, softmax(q k^T / sqrt(d)) v, a residual LayerNorm.
SELF_ATTENTION = '''
import math

import torch
import torch.nn as nn


class SelfAttention(nn.Module):
    def __init__(self, dim=8, classes=3):
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        scores = torch.matmul(self.q(x), self.k(x).transpose(1, 2)) / math.sqrt(x.shape[-1])
        y = torch.matmul(torch.softmax(scores, dim=-1), self.v(x))
        return self.head(self.norm(x + y).mean(dim=1))
'''

# What PaConvert 3.3.1 and 3.3.0 wrote for CNN and MULTIHEAD (recorded with paddle 3.3.1 installed). 3.3.1's
# CNN calls paddle.nn.MaxPool2d, which paddle 3.3.1 does not have; 3.3.0's runs, with paddle.compat.nn.Linear,
# and converts nn.MultiheadAttention (3.2.1 does not).
RECORDED = {
    ("3.3.1", "cnn"): '''import paddle


class SmallCNN(paddle.nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = paddle.nn.Conv2d(3, 8, kernel_size=3, padding=1)
        self.bn1 = paddle.nn.BatchNorm2D(num_features=8)
        self.conv2 = paddle.nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = paddle.nn.BatchNorm2D(num_features=16, momentum=1 - 0.2)
        self.pool = paddle.nn.MaxPool2d(2)
        self.fc = paddle.compat.nn.Linear(16 * 4 * 4, classes)

    def forward(self, x):
        x = self.pool(paddle.nn.functional.relu(self.bn1(self.conv1(x))))
        x = self.pool(paddle.nn.functional.relu(x=self.bn2(self.conv2(x))))
        return self.fc(paddle.flatten(x, 1))


def build():
    return SmallCNN()
''',
}
RECORDED["3.3.0", "cnn"] = (RECORDED["3.3.1", "cnn"].replace("paddle.nn.MaxPool2d(2)", "paddle.nn.MaxPool2D(kernel_size=2)")
                            .replace("relu(self.bn1", "relu(x=self.bn1"))
RECORDED["3.3.0", "attn"] = '''import paddle


class AttnNet(paddle.nn.Module):
    def __init__(self, dim=8, heads=2, classes=3):
        super().__init__()
        self.attn = paddle.compat.nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = paddle.nn.LayerNorm(dim)
        self.head = paddle.compat.nn.Linear(dim, classes)

    def forward(self, x):
        y, _ = self.attn(x, x, x)
        return self.head(self.norm(x + y).mean(dim=1))
'''


def write(tmp_path, name, source):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source).lstrip())
    return path


def stand_in_paconvert(tmp_path, release, code):
    """A folder holding a `paconvert` of another release (its dist-info says so) whose main writes code,
    whatever it is given; put first on sys.path and PYTHONPATH."""
    root = tmp_path / f"paconvert-{release}"
    (root / "paconvert").mkdir(parents=True)
    (root / "paconvert" / "__init__.py").write_text("")
    (root / "paconvert" / "main.py").write_text(textwrap.dedent(f'''
        import argparse, pathlib
        parser = argparse.ArgumentParser()
        for name in ("--in_dir", "--out_dir", "--log_dir"):
            parser.add_argument(name)
        args, _ = parser.parse_known_args()
        pathlib.Path(args.out_dir).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.out_dir).write_text({code!r})
        pathlib.Path(args.log_dir).write_text("There are 10 Pytorch APIs in this Project:\\n"
                                              " 10  Pytorch APIs have been converted to Paddle successfully!\\n")
        '''))
    info = root / f"paconvert-{release}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: paconvert\nVersion: {release}\n")
    return root


def one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dualbench: error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------------
# The conversion's pieces (no framework)


def test_marked_lines_are_found_with_their_torch_api_and_source_line():
    code = ("import paddle\n\n\nclass A(paddle.nn.Layer):\n    def __init__(self):\n        super().__init__()\n"
            ">>>>>>        self.attn = torch.nn.MultiheadAttention(8, 2)\n"
            ">>>>>>        self.x = y.unknown_method(3)\n")
    log = ("[a.py:8] [Not Support] convert torch.nn.MultiheadAttention to Paddle is not supported currently\n"
           "[a.py:9] [Not Support] convert Class Method: torch.Tensor.unknown_method to Paddle is not supported currently\n")
    first, second = find_unconverted(code, log)
    assert (first.line, first.source_line, first.api) == (7, 8, "torch.nn.MultiheadAttention")
    assert first.code == "self.attn = torch.nn.MultiheadAttention(8, 2)"
    assert (second.line, second.source_line, second.api) == (8, 9, "torch.Tensor.unknown_method")
    assert find_unconverted("import paddle\nx = 1\n", "") == []
    (bare,) = find_unconverted(">>>>>>z = torch.special.thing(1)\n", "")
    assert (bare.source_line, bare.api) == (None, "torch.special.thing")


def test_a_missing_paddle_api_is_named_in_full():
    assert missing_api("module 'paddle.nn' has no attribute 'MaxPool2d'") == "paddle.nn.MaxPool2d"
    # an older paddle without paddle.compat: the whole call on the line is named
    assert missing_api("module 'paddle' has no attribute 'compat'",
                       "        self.fc = paddle.compat.nn.Linear(256, 10)") == "paddle.compat.nn.Linear"
    assert missing_api("'Tensor' object has no attribute 'unflatten'") == "paddle.Tensor.unflatten"
    assert missing_api("'NoneType' object has no attribute 'shape'") is None


@pytest.mark.e2e
def test_without_paconvert_the_extra_is_named(tmp_path):
    # simulate a machine without PaConvert: sitecustomize blocks the import, for this process only
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['paconvert'] = None\n")
    source = write(tmp_path, "cnn.py", CNN)
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    proc = run_cli("port", f"{source}:build", "--input", "2,3,16,16", "--out", tmp_path / "out",
                   env={"PYTHONPATH": path})
    one_line_error(proc, "PaConvert", "pip install 'dualbench[port]'", TESTED_RELEASE)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["torchvision.models:resnet18", "--input", "2,3,8,8"], "expected FILE.py:CALLABLE"),
    (["{dir}/nothing.py:build", "--input", "2,3,16,16"], "no such file"),
    (["{dir}/cnn.py:build"], "--input SHAPE"),
    (["{dir}/cnn.py:build", "--input", "1,3,16,16"], "a batch of at least 2"),
    (["{dir}/cnn.py:build", "--inputs", "{dir}/missing.npz"], "missing.npz: no such file"),
    (["{dir}/cnn.py:build", "--input", "2,3,16,16", "--steps", "0"], "--steps must be at least 1"),
])
def test_bad_input_is_one_line_and_loses_nothing(tmp_path, args, message):
    write(tmp_path, "cnn.py", CNN)
    out = tmp_path / "out"
    out.mkdir()
    (out / "parity.csv").write_text("kept\n")
    proc = run_main("port", *[a.format(dir=tmp_path) for a in args], "--out", out)
    one_line_error(proc, message)
    assert sorted(p.name for p in out.iterdir()) == ["parity.csv"] and (out / "parity.csv").read_text() == "kept\n"


# ---------------------------------------------------------------------------------------------
# Converted by PaConvert, then checked


@needs_paconvert
@pytest.mark.slow
@pytest.mark.e2e
def test_port_converts_a_cnn_whose_pair_passes(tmp_path):
    source, out = write(tmp_path, "cnn.py", CNN), tmp_path / "out"
    proc = run_cli("port", f"{source}:build", "--input", "2,3,16,16", "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"PaConvert {TESTED_RELEASE}: 10 of 10 torch APIs converted; wrote {out / 'cnn_paddle.py'}" in proc.stdout
    assert "build: pass" in proc.stdout
    for name in ("cnn_paddle.py", "unconverted.txt", "paconvert.log", "mapping.json", "parity.csv", "parity.md"):
        assert (out / name).is_file(), name
    paddle_code = (out / "cnn_paddle.py").read_text()
    assert "torch" not in paddle_code
    # 3.2.1 writes paddle's own layers and turns torch's BatchNorm momentum m into paddle's 1 - m
    assert "paddle.nn.BatchNorm2D(num_features=16, momentum=1 - 0.2)" in paddle_code
    assert "paddle.nn.Linear(in_features=16 * 4 * 4, out_features=classes)" in paddle_code
    assert "0 lines not converted" in (out / "unconverted.txt").read_text()
    mapping = json.loads((out / "mapping.json").read_text())
    assert mapping["paddle"] == f"{out / 'cnn_paddle.py'}:build"
    assert {m["torch"] for m in mapping["modules"]} == {"conv1", "bn1", "conv2", "bn2", "pool", "fc"}


@needs_paconvert
@pytest.mark.slow
def test_port_passes_attention_written_out(tmp_path):
    """q, k, v projections, softmax and matmul: PaConvert converts every call and the pair passes."""
    source, out = write(tmp_path, "attention.py", SELF_ATTENTION), tmp_path / "out"
    proc = run_main("port", f"{source}:SelfAttention", "--input", "2,5,8", "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "12 of 12 torch APIs converted" in proc.stdout and "SelfAttention: pass" in proc.stdout
    assert "paddle.softmax(scores, dim=-1)" in (out / "attention_paddle.py").read_text()


@needs_paconvert
@pytest.mark.slow
def test_a_pair_out_of_tolerance_exits_1_with_its_verdict(tmp_path):
    """Zero tolerances: float32 rounding fails the pair; the verdict names the first failure (exit 1)."""
    source, out = write(tmp_path, "cnn.py", CNN), tmp_path / "out"
    proc = run_main("port", f"{source}:build", "--input", "2,3,16,16", "--out", out, "--atol", "0", "--rtol", "0")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "build: FAIL at " in proc.stdout and proc.stderr == ""
    assert (out / "parity.csv").is_file() and (out / "parity.md").is_file()


@needs_paconvert
@pytest.mark.slow
@pytest.mark.parametrize("source, callable_, api, line", [
    (MULTIHEAD, "AttnNet", "torch.nn.MultiheadAttention", 7),
    (ENCODER, "Encoder", "torch.nn.TransformerEncoderLayer", 7),
])
def test_a_line_paconvert_cannot_convert_is_named(tmp_path, source, callable_, api, line):
    """PaConvert 3.2.1 converts neither nn.MultiheadAttention nor nn.TransformerEncoderLayer: it marks the
    line >>>>>>, the paddle file cannot import; the command names the line and the API, and exits 2."""
    path, out = write(tmp_path, "model.py", source), tmp_path / "out"
    proc = run_main("port", f"{path}:{callable_}", "--input", "2,5,8", "--out", out)
    error = one_line_error(proc, f"could not convert model.py:{line} ({api})", f"{out / 'model_paddle.py'}:7",
                           f"dualbench parity --torch {path}:{callable_} --paddle {out / 'model_paddle.py'}:{callable_}")
    assert "--input 2,5,8" in error
    assert f"model.py:{line} -> model_paddle.py:7  {api}" in proc.stdout
    assert (out / "model_paddle.py").read_text().splitlines()[6].startswith(">>>>>>")
    assert f"model.py:{line} -> model_paddle.py:7  {api}" in (out / "unconverted.txt").read_text()
    assert not (out / "parity.csv").exists()


@needs_paconvert
@pytest.mark.slow
def test_lstm_conversion(tmp_path):
    """What PaConvert 3.2.1 writes for a 2-layer batch_first LSTM: paddle.nn.LSTM with time_major=not True."""
    from dualbench.port.convert import convert_file
    path = write(tmp_path, "lstm.py", LSTM)
    conversion = convert_file(path, tmp_path / "out", TESTED_RELEASE, echo=lambda *a: None)
    code = conversion.paddle_file.read_text()
    assert conversion.unconverted == [] and (conversion.apis, conversion.converted) == (3, 3)
    assert "paddle.nn.LSTM(\n            input_size=features, hidden_size=hidden, num_layers=2, time_major=not True\n" in code


@needs_paconvert
@pytest.mark.slow
def test_port_lstm_pair_passes(tmp_path):
    """A 2-layer batch_first LSTM and a Linear head, converted by PaConvert: the pair passes."""
    path, out = write(tmp_path, "lstm.py", LSTM), tmp_path / "out"
    proc = run_main("port", f"{path}:Tagger", "--input", "2,5,6", "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Tagger: pass" in proc.stdout


# ---------------------------------------------------------------------------------------------
# Output of other PaConvert releases (a stand-in writes what they wrote)


@pytest.mark.slow
def test_an_api_paddle_lacks_is_one_line(tmp_path, monkeypatch):
    """PaConvert 3.3.1 writes paddle.nn.MaxPool2d; paddle 3.3.1 has MaxPool2D only. One line names the API,
    the paddle version, the line and the release to install instead."""
    root = stand_in_paconvert(tmp_path, "3.3.1", RECORDED["3.3.1", "cnn"])
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", str(root))
    import paddle
    if hasattr(paddle.nn, "MaxPool2d"):
        pytest.skip(f"paddle {paddle.__version__} has paddle.nn.MaxPool2d")
    path, out = write(tmp_path, "cnn.py", CNN), tmp_path / "out"
    proc = run_main("port", f"{path}:build", "--input", "2,3,16,16", "--out", out)
    one_line_error(proc, f"the converted code calls paddle.nn.MaxPool2d, which paddle {paddle.__version__} does "
                         f"not have ({out / 'cnn_paddle.py'}:11; written by PaConvert 3.3.1; ",
                   f"tested with PaConvert {TESTED_RELEASE}: pip install 'paconvert=={TESTED_RELEASE}'")
    assert "PaConvert 3.3.1: 10 of 10 torch APIs converted" in proc.stdout
    assert (out / "cnn_paddle.py").is_file() and not (out / "parity.csv").exists()


@pytest.mark.slow
def test_an_api_paddle_lacks_in_forward_is_one_line(tmp_path, monkeypatch):
    """The same for a call in forward() (reached by the checks, not by building the model): here a
    functional op no paddle has."""
    code = RECORDED["3.3.0", "cnn"].replace("functional.relu(x=self.bn2", "functional.relu_twice(x=self.bn2")
    root = stand_in_paconvert(tmp_path, "3.3.0", code)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", str(root))
    import paddle
    path, out = write(tmp_path, "cnn.py", CNN), tmp_path / "out"
    proc = run_main("port", f"{path}:build", "--input", "2,3,16,16", "--out", out)
    one_line_error(proc, f"the converted code calls paddle.nn.functional.relu_twice, which paddle {paddle.__version__} "
                         f"does not have ({out / 'cnn_paddle.py'}:16; written by PaConvert 3.3.0; ")


@pytest.mark.slow
@pytest.mark.parametrize("model, source, callable_, shape", [
    ("cnn", CNN, "build", "2,3,16,16"), ("attn", MULTIHEAD, "AttnNet", "2,5,8")])
def test_paconvert_3_3_0_output_pairs_pass(tmp_path, monkeypatch, model, source, callable_, shape):
    """PaConvert 3.3.0's output: paddle.compat.nn.Linear (torch's [out, in] weight) in the CNN, and
    nn.MultiheadAttention converted to paddle.compat.nn.MultiheadAttention: both pairs pass."""
    root = stand_in_paconvert(tmp_path, "3.3.0", RECORDED["3.3.0", model])
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", str(root))
    import paddle
    if not hasattr(paddle, "compat") or not hasattr(paddle.compat.nn, "MultiheadAttention"):
        pytest.skip(f"paddle {paddle.__version__} has no paddle.compat.nn")
    path, out = write(tmp_path, f"{model}.py", source), tmp_path / "out"
    proc = run_main("port", f"{path}:{callable_}", "--input", shape, "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{callable_}: pass" in proc.stdout and "PaConvert 3.3.0:" in proc.stdout
