"""PaConvert on a copy of a torch file: the paddle file, PaConvert's log, and the lines it could not convert.

PaConvert (github.com/PaddlePaddle/PaConvert, the optional extra dualbench[port]) rewrites torch calls into
paddle calls from its API mapping table; a call it cannot convert stays torch code and its line gets '>>>>>>'
in front, so the converted file no longer parses. It runs here as a subprocess (`python -m paconvert.main`,
0.2 s for a 20-line file) in a temporary folder; only its results are written to OUT, atomically:
OUT/<name>_paddle.py, OUT/unconverted.txt and OUT/paconvert.log.

Releases differ (measured on a small CNN, an LSTM and an nn.MultiheadAttention model with paddle 3.3.1):
3.2.1 emits paddle's own layers (Conv2D through the paddle.nn.Conv2d alias, Linear(in_features=...),
BatchNorm2d's momentum m as 1 - m, batch_first=True as time_major=not True) and its CNN output runs; it
cannot convert nn.MultiheadAttention or nn.TransformerEncoderLayer. 3.3.0 emits paddle.compat.nn.Linear
(torch's [out, in] weight) and paddle.compat.nn.MultiheadAttention. 3.3.1 also emits paddle.nn.MaxPool2d,
which paddle 3.3.1 does not have. The extra pins TESTED_RELEASE.
"""
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from dualbench.common.errors import UserError

PORT_EXTRA = "dualbench[port]"
TESTED_RELEASE = "3.2.1"      # the release the extra pins: its output of the tests' models runs on paddle 3.3.1
MARK = ">>>>>>"               # PaConvert's mark in front of a line it could not convert
TIMEOUT_S = 600               # PaConvert takes 0.2 s on a 20-line file; a hang is an error, not a wait

# PaConvert's log: "[model.py:8] [Not Support] convert torch.nn.MultiheadAttention to Paddle is not supported
# currently" (also "Convert ...", "convert Class Method: torch.Tensor.x ...", "... Class Attribute: ...")
NOT_SUPPORTED = re.compile(r"^\[[^\]]*?:(\d+)\] \[Not Support\] [Cc]onvert (?:Class \w+: )?(\S+) to Paddle", re.M)
API_COUNT = re.compile(r"There are (\d+) Pytorch APIs")
CONVERTED_COUNT = re.compile(r"(\d+)\s+Pytorch APIs have been converted")
TORCH_NAME = re.compile(r"\btorch(?:\.\w+)+")


@dataclass
class Unconverted:
    """One line PaConvert could not convert."""
    line: int                      # in the paddle file
    source_line: Optional[int]     # in the torch file (from PaConvert's log), None when the log does not say
    api: str                       # the torch API on that line, e.g. torch.nn.MultiheadAttention
    code: str                      # the line as written, without the mark


@dataclass
class Conversion:
    source: Path                   # the torch file
    paddle_file: Path              # OUT/<name>_paddle.py
    version: str                   # PaConvert's release
    apis: Optional[int] = None     # torch APIs PaConvert found (its summary), None when the log lacks it
    converted: Optional[int] = None
    unconverted: list = field(default_factory=list)

    def summary(self):
        counted = f"{self.converted} of {self.apis} torch APIs converted" if self.apis is not None else \
            "converted"
        return f"PaConvert {self.version}: {counted}; wrote {self.paddle_file}"

    def where(self, item):
        """'model.py:8 -> model_paddle.py:7' for one unconverted line."""
        source = f"{self.source.name}:{item.source_line}" if item.source_line else self.source.name
        return f"{source} -> {self.paddle_file.name}:{item.line}"


def require_paconvert():
    """PaConvert's release, without importing it (black and isort: 0.15 s); a one-line UserError naming the
    extra when it is not installed."""
    try:
        found = importlib.util.find_spec("paconvert") is not None
    except (ImportError, ValueError):   # ValueError: a module blocked with sys.modules[name] = None
        found = False
    if not found:
        raise UserError(f"dualbench port needs PaConvert, which is not installed: pip install '{PORT_EXTRA}' "
                        f"(PaConvert {TESTED_RELEASE})")
    try:
        return importlib.metadata.version("paconvert")
    except importlib.metadata.PackageNotFoundError:
        return "(unknown release)"


def release_hint(version):
    """What to install when the installed release is not the tested one; empty when it is."""
    return "" if version == TESTED_RELEASE else \
        f"; dualbench port is tested with PaConvert {TESTED_RELEASE}: pip install 'paconvert=={TESTED_RELEASE}'"


def paddle_file_for(source, out_dir):
    return Path(out_dir) / f"{Path(source).stem}_paddle.py"


def run_paconvert(source, version):
    """(converted code, PaConvert's log) for one torch file, from a copy of it in a temporary folder.
    The log's temporary paths are replaced by the real source's."""
    with tempfile.TemporaryDirectory(prefix="dualbench-port-") as tmp:
        copy, converted, log = Path(tmp) / source.name, Path(tmp) / "out" / source.name, Path(tmp) / "paconvert.log"
        shutil.copyfile(source, copy)
        command = [sys.executable, "-m", "paconvert.main", "--in_dir", str(copy), "--out_dir", str(converted),
                   "--log_dir", str(log)]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise UserError(f"{source}: PaConvert {version} did not finish in {TIMEOUT_S} s") from None
        log_text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        if proc.returncode != 0 or not converted.is_file():
            lines = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
            raise UserError(f"{source}: PaConvert {version} could not convert it ({lines[-1].strip()[:240]})")
        code = converted.read_text(encoding="utf-8")
        log_text = log_text.replace(str(converted), "(converted)").replace(str(copy), str(source))
    return code, log_text


def find_unconverted(code, log_text):
    """The lines PaConvert marked, with the torch API on each: the dotted torch name on the line, matched
    with the log's [Not Support] entries (in order) for the torch file's line number."""
    entries = [(int(line), api) for line, api in NOT_SUPPORTED.findall(log_text)]
    found = []
    for number, text in enumerate(code.splitlines(), start=1):
        if not text.startswith(MARK):
            continue
        line = text[len(MARK):]
        named = TORCH_NAME.search(line)
        entry = next((e for e in entries if e[1] in line or "." + e[1].rsplit(".", 1)[-1] + "(" in line), None)
        if entry is None and named:
            entry = next((e for e in entries if e[1] == named.group(0)), None)
        if entry is not None:
            entries.remove(entry)
        api = entry[1] if entry else (named.group(0) if named else "(a torch API)")
        found.append(Unconverted(number, entry[0] if entry else None, api, line.strip()))
    return found


def unconverted_text(conversion):
    """OUT/unconverted.txt: a header line, then one line per unconverted line (none: the header says so)."""
    n = len(conversion.unconverted)
    lines = [f"# {conversion.summary()}; {n} line{'s' if n != 1 else ''} not converted"
             + (" (marked >>>>>> in the paddle file)" if n else "")]
    lines += [f"{conversion.where(u)}  {u.api}: {u.code}" for u in conversion.unconverted]
    return "\n".join(lines) + "\n"


def convert_file(source, out_dir, version, echo=print):
    """Convert one torch file into OUT (see the module's docstring); prints what PaConvert did and the
    lines it could not convert. Returns the Conversion; the caller decides what unconverted lines mean."""
    from dualbench.common.fsutil import atomic_write_text, folder_lock
    source, out_dir = Path(source).resolve(), Path(out_dir)
    code, log_text = run_paconvert(source, version)
    apis, converted = API_COUNT.search(log_text), CONVERTED_COUNT.search(log_text)
    conversion = Conversion(source, paddle_file_for(source, out_dir), version,
                            int(apis.group(1)) if apis else None, int(converted.group(1)) if converted else None,
                            find_unconverted(code, log_text))
    with folder_lock(out_dir, "port"):
        atomic_write_text(conversion.paddle_file, code)
        atomic_write_text(out_dir / "paconvert.log", log_text)
        atomic_write_text(out_dir / "unconverted.txt", unconverted_text(conversion))
    echo(conversion.summary())
    if conversion.unconverted:
        n = len(conversion.unconverted)
        echo(f"not converted ({n} line{'s' if n != 1 else ''}, also in {out_dir / 'unconverted.txt'}):")
        for u in conversion.unconverted:
            echo(f"  {conversion.where(u)}  {u.api}: {u.code}")
    return conversion


def unconverted_error(conversion, check_command):
    """The one-line UserError for a conversion with marked lines (the paddle file cannot import)."""
    first, n = conversion.unconverted[0], len(conversion.unconverted)
    source = f"{conversion.source.name}:{first.source_line}" if first.source_line else conversion.source.name
    which = f"{source} ({first.api})" if n == 1 else f"{n} lines, first {source} ({first.api})"
    listed = "" if n == 1 else f", all listed in {conversion.paddle_file.parent / 'unconverted.txt'}"
    return UserError(f"PaConvert {conversion.version} could not convert {which}: marked >>>>>> at "
                     f"{conversion.paddle_file}:{first.line}{listed}, the file does not import; convert "
                     f"{'it' if n == 1 else 'them'} by hand there, then check the pair with `{check_command}`")
