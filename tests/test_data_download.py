"""Downloads against a local HTTP server on 127.0.0.1 (never the internet): Range resume, dropped
connections, 404, timeouts, checksum mismatch; nothing half-written is ever left as data."""
import dataclasses
import hashlib
import http.server
import threading
import time

import numpy as np
import pytest

from dualbench.common.data import download as dl
from dualbench.common.data import catalog, sources
from dualbench.common.data.catalog import IDX_FILES
from dualbench.common.errors import DataError
from tests.conftest import run_cli


class Server:
    """Serves `files` (path -> bytes) with Range support; `drops[path]` = how many responses to cut
    off halfway (headers promise the full length, then the socket closes); `stall` seconds of
    silence before a body; `ignore_range` answers 200 to Range requests."""

    def __init__(self):
        self.files, self.drops, self.requests = {}, {}, []
        self.stall, self.ignore_range = 0.0, False
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and not server.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.stall:
                    time.sleep(server.stall)
                if server.drops.get(self.path, 0) > 0:
                    server.drops[self.path] -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def md5(data):
    return hashlib.md5(data).hexdigest()


PAYLOAD = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
FAST = dict(timeout=5, backoff=0, progress=False)


def test_download_verifies_and_renames(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    dest = dl.download(server.url + "/f.bin", tmp_path / "f.bin", md5(PAYLOAD), **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_dropped_connection_resumes_with_range(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.drops["/f.bin"] = 2
    dest = dl.download(server.url + "/f.bin", tmp_path / "f.bin", md5(PAYLOAD), retries=3, **FAST)
    assert dest.read_bytes() == PAYLOAD
    ranges = [r for _, r in server.requests]
    assert ranges[0] is None and ranges[1] == f"bytes={len(PAYLOAD) // 2}-"
    assert len(ranges) == 3 and not dl.part_path(dest).exists()


def test_gives_up_keeping_part_then_next_run_resumes(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.drops["/f.bin"] = 10
    dest = tmp_path / "f.bin"
    with pytest.raises(DataError) as info:
        dl.download(server.url + "/f.bin", dest, md5(PAYLOAD), retries=1, **FAST)
    assert "connection dropped" in info.value.problem and "run again to resume" in info.value.problem
    assert info.value.path == server.url + "/f.bin"
    assert not dest.exists()
    kept = dl.part_path(dest).stat().st_size
    assert 0 < kept < len(PAYLOAD)
    server.drops["/f.bin"] = 0
    server.requests.clear()
    dl.download(server.url + "/f.bin", dest, md5(PAYLOAD), **FAST)
    assert dest.read_bytes() == PAYLOAD and server.requests == [("/f.bin", f"bytes={kept}-")]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.ignore_range = True
    dest = tmp_path / "f.bin"
    dl.part_path(dest).write_bytes(b"stale bytes from another file")
    dl.download(server.url + "/f.bin", dest, md5(PAYLOAD), **FAST)
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_answered_416_is_verified(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "f.bin"
    dl.part_path(dest).write_bytes(PAYLOAD)
    dl.download(server.url + "/f.bin", dest, md5(PAYLOAD), **FAST)
    assert dest.read_bytes() == PAYLOAD and server.requests[-1][1] == f"bytes={len(PAYLOAD)}-"


def test_404_and_checksum_mismatch_leave_nothing(server, tmp_path):
    dest = tmp_path / "f.bin"
    with pytest.raises(DataError) as info:
        dl.download(server.url + "/missing.bin", dest, md5(PAYLOAD), **FAST)
    assert info.value.problem.startswith("HTTP 404") and info.value.path.endswith("/missing.bin")
    server.files["/f.bin"] = PAYLOAD
    with pytest.raises(DataError) as info:
        dl.download(server.url + "/f.bin", dest, "0" * 32, **FAST)
    assert "md5 mismatch" in info.value.problem and md5(PAYLOAD) in info.value.problem
    assert list(tmp_path.iterdir()) == []


def test_timeout_is_retried_then_reported(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.stall = 1.0
    with pytest.raises(DataError) as info:
        dl.download(server.url + "/f.bin", tmp_path / "f.bin", md5(PAYLOAD), timeout=0.2, retries=1,
                    backoff=0, progress=False)
    assert "gave up after 2 attempts" in info.value.problem
    assert len(server.requests) == 2 and not (tmp_path / "f.bin").exists()


def test_next_mirror_after_a_404(server, tmp_path):
    server.files["/b/f.bin"] = PAYLOAD
    dest = dl.download_first([server.url + "/a/f.bin", server.url + "/b/f.bin"], tmp_path / "f.bin",
                             md5(PAYLOAD), **FAST)
    assert dest.read_bytes() == PAYLOAD


def _serve_idx(server, tmp_path, prefix="/mnist/"):
    from dualbench.common.data.synth import write_synthetic
    src = write_synthetic("synthetic-mnist", tmp_path / "src", n_train=40, n_test=20)
    for fname in IDX_FILES.values():
        server.files[prefix + fname] = (src / fname).read_bytes()
    return {fname: md5(server.files[prefix + fname]) for fname in IDX_FILES.values()}


def test_prepare_downloads_verifies_and_installs(server, tmp_path, monkeypatch):
    """The whole `prepare` path with this server as the official mirror and its files' md5s."""
    from dualbench.common.data.prepare import prepare, verify
    monkeypatch.setenv("DUALBENCH_DATA", str(tmp_path / "cache"))
    checksums = _serve_idx(server, tmp_path)
    server.drops["/mnist/train-images-idx3-ubyte.gz"] = 1
    info = dataclasses.replace(catalog.DATASETS["mnist"], mirrors=(server.url + "/mnist/",), md5=checksums)
    monkeypatch.setitem(catalog.DATASETS, "mnist", info)
    lines = prepare("mnist", progress=False)
    assert "downloaded from" in lines[0] and "train 40, test 20" in lines[2]
    cache = tmp_path / "cache"
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted([*IDX_FILES.values(), "MANIFEST.json"])
    assert list((cache / "downloads").iterdir()) == []
    report = "\n".join(verify("mnist", progress=False))
    assert "all 4 files match the published checksums" in report and "4 files match the sha256" in report
    ds = sources.load_dataset("mnist")
    assert ds.source == str(cache / "mnist") and len(ds.train_y) == 40


def test_cli_prepare_checksum_mismatch_and_404(server, tmp_path):
    """Through the CLI: the test server's files are not the published MNIST, so md5 fails."""
    _serve_idx(server, tmp_path)
    cache = tmp_path / "cache"
    env = {"DUALBENCH_DATA": str(cache)}
    proc = run_cli("data", "prepare", "mnist", "--mirror", server.url + "/mnist", "--no-progress", env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    error = proc.stderr.strip().splitlines()
    assert len(error) == 1 and "train-images-idx3-ubyte.gz: md5 mismatch: expected f68b3c2d" in error[0]
    assert not (cache / "mnist").exists() and list((cache / "downloads").iterdir()) == []
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]   # no staging folder left
    proc = run_cli("data", "prepare", "mnist", "--mirror", server.url + "/nowhere/", "--no-progress", env=env)
    assert proc.returncode == 2 and proc.stderr.strip().endswith("HTTP 404 Not Found")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (cache / "mnist").exists()
