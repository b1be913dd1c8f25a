"""Verified, resumable downloads with the standard library (urllib) and a tqdm progress bar.

A download streams into `<dest>.part` (dest lives in $DUALBENCH_DATA/downloads/). A dropped
connection or a timeout is retried with exponential backoff, resuming with an HTTP Range request
from the bytes already on disk. When the server has sent everything, the file is checked against
its published md5 and only then renamed to `dest`; a mismatch deletes the `.part`. An interrupted
`.part` stays for the next attempt to resume and is never read as data.
"""
import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from dualbench.common.data.store import file_digest
from dualbench.common.errors import DataError

CHUNK = 1 << 16
USER_AGENT = "dualbench-data/0.1 (+urllib)"


class TransientError(Exception):
    """A failure worth retrying: dropped connection, timeout, HTTP 5xx."""


def part_path(dest):
    return Path(f"{dest}.part")


def _open(url, offset, timeout):
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            return None   # nothing left to send: the .part is complete (verification decides)
        if e.code >= 500 or e.code == 429:
            raise TransientError(f"HTTP {e.code} {e.reason}") from None
        raise DataError(url, f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, socket.gaierror):   # no DNS: offline, or a wrong host; retrying won't help
            raise DataError(url, f"cannot resolve the host ({e.reason}); offline? use --from PATH") from None
        raise TransientError(f"cannot connect ({e.reason})") from None
    except (OSError, http.client.HTTPException) as e:
        raise TransientError(f"cannot connect ({type(e).__name__}: {e})") from None


def _fetch_once(url, part, timeout, progress):
    """Append the rest of `url` to `part` (or start over when the server ignores the Range)."""
    offset = part.stat().st_size if part.exists() else 0
    response = _open(url, offset, timeout)
    if response is None:
        return
    with response:
        resumed = offset > 0 and response.status == 206 and \
            response.headers.get("Content-Range", "").startswith(f"bytes {offset}-")
        if not resumed:
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        received = offset
        with open(part, "ab" if resumed else "wb") as f, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                     desc=Path(url).name, disable=None if progress else True, leave=False) as bar:
            try:
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (http.client.IncompleteRead, OSError, http.client.HTTPException) as e:
                raise TransientError(f"connection dropped after {received} of {total or '?'} bytes "
                                     f"({type(e).__name__})") from None
            f.flush()
            os.fsync(f.fileno())
        if total is not None and received < total:
            raise TransientError(f"connection dropped after {received} of {total} bytes")


def download(url, dest, md5=None, timeout=30.0, retries=4, backoff=1.0, progress=True):
    """Download `url` to `dest`, verified against `md5`; returns dest.

    Errors are DataError naming the URL (HTTP 404, checksum mismatch) or, after the retries, the
    transient problem with how much is kept in `<dest>.part` for the next run to resume.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, timeout, progress)
            break
        except TransientError as e:
            if attempt == retries:
                kept = part.stat().st_size if part.exists() else 0
                raise DataError(url, f"{e}; gave up after {retries + 1} attempts"
                                     + (f" ({kept} bytes kept in {part}, run again to resume)" if kept else "")) from None
            time.sleep(backoff * 2 ** attempt)
    if md5 is not None:
        got = file_digest(part, "md5")
        if got != md5:
            part.unlink()
            raise DataError(url, f"md5 mismatch: expected {md5}, got {got} (download removed; run again)")
    with open(part, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(part, dest)
    return dest


def download_first(urls, dest, md5=None, **kw):
    """Try each mirror in turn; the last mirror's error is raised when all fail."""
    error = None
    for i, url in enumerate(urls):
        try:
            return download(url, dest, md5, **kw)
        except DataError as e:
            error = e
            if i + 1 < len(urls):
                print(f"dualbench: {e}; trying the next mirror", file=sys.stderr)
    raise error
