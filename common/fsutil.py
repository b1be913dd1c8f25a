"""Atomic file writes (temporary file beside the target, fsync, rename) and the output-folder lock.

A crash or Ctrl-C at any moment leaves either the old file or the new one, never a mix, and the
temporary file is removed on every exit path. The lock keeps two commands from writing the same
folder at once (rows interleaved, cells done twice, and for `bench` two suites timed on the same cores).
"""
import contextlib
import fcntl
import os
import stat
import tempfile
from pathlib import Path

from dualbench.common.errors import UserError

LOCK_NAME = ".dualbench.lock"


def _umask():
    """The process umask, read without changing it where Linux shows it (os.umask must set one to read it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_file_mode(path):
    """The mode a plain open() would give: the existing file's, else 0o666 less the umask.
    (mkstemp creates 0o600, which would make every result file private to its writer.)"""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path, suffix=".part"):
    """Yield a temporary path in the target's folder; on success rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode(path))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path, data):
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def folder_lock(folder, command):
    """Hold an exclusive lock on FOLDER/.dualbench.lock while `command` writes the folder.

    A second command on the same folder stops at once with a one-line UserError naming the holder. The
    lock is flock(2): the kernel drops it when the holder exits, even on kill -9, so a crash never leaves
    a stale lock. The file stays (removing it would race with the next command), except in a folder
    this command created and left empty.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    locked = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise UserError(f"{folder}: {holder} is writing this folder; wait for it to finish or use "
                            "another output folder") from None
        locked = True
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"dualbench {command} (pid {os.getpid()})".encode(), 0)
        yield
    finally:
        if locked and created and os.listdir(folder) == [LOCK_NAME]:   # failed before writing anything
            path.unlink()
            folder.rmdir()
        os.close(fd)   # releases the lock
