"""Shared fixtures: a private data cache with the synthetic MNIST files, CLI runner, both backends."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def data_home(tmp_path_factory):
    """Every test uses a private DUALBENCH_DATA, so nothing on the machine is read or written."""
    home = tmp_path_factory.mktemp("dualbench-data")
    os.environ["DUALBENCH_DATA"] = str(home)
    return home


@pytest.fixture(scope="session")
def synthetic_mnist(data_home):
    from dualbench.common.data.sources import load_dataset
    return load_dataset("synthetic-mnist")


def default_signals():
    """preexec_fn for a child that is sent signals: SIGINT and SIGTERM back to their defaults. A
    process started with SIGINT ignored (nohup, a background job: the test run itself, say) passes the
    ignored disposition on to its children, where Ctrl-C would then do nothing."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_main(*args):
    """`dualbench ARGS` inside this process, from the repository root: the same exit code, stdout and stderr
    as run_cli, without a new process importing both frameworks again (about 4 s each). For commands that
    run their work in this process (parity, convert, report, data); an exception that the command would
    have let through fails the test instead of printing a traceback."""
    import contextlib
    import io

    from dualbench.cli import main
    out, err = io.StringIO(), io.StringIO()
    handler = signal.getsignal(signal.SIGTERM)     # main() installs its own
    try:
        with contextlib.chdir(ROOT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:                 # argparse's usage errors
                code = e.code
    finally:
        signal.signal(signal.SIGTERM, handler)
    return subprocess.CompletedProcess(["dualbench", *map(str, args)], code, out.getvalue(), err.getvalue())


def run_cli(*args, env=None, timeout=600):
    """Run `dualbench ARGS` (python -m dualbench.cli) in a subprocess; returns CompletedProcess (text)."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "dualbench.cli", *map(str, args)], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(params=["torch", "paddle"])
def backend(request):
    from dualbench import backends
    if not backends.is_installed(request.param):
        pytest.skip(f"{request.param} not installed")
    return backends.load(request.param)
