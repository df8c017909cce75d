"""Writing to disk safely: every file replaced atomically, one writer per directory.

- :func:`replace_atomically` (and :func:`write_atomic` for text) writes into a temporary file in the
  target's directory, flushes it to disk and renames it over the target: a crash, a full disk or
  Ctrl-C mid-write leaves the previous file whole and no stray file.
- :class:`DirectoryLock` holds an exclusive ``flock`` on ``LOCK_FILE`` inside a directory, in a
  ``with`` block. The lock file holds who owns it (pid, host, command, start time), written
  before the file appears, so a refused writer can name the holder. The kernel drops a flock when its
  holder exits, even on SIGKILL: a lock file left behind by a dead process does not block.

Neither imports torch, so the NumPy-only parts of hapruned can use them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import tempfile
import time
from pathlib import Path

LOCK_FILE = ".hapruned.lock"


class DirectoryLocked(RuntimeError):
    """Another process holds the directory's lock; the message names it."""


def replace_atomically(path, write, binary: bool = True) -> None:
    """``write(file)`` into a temporary file in ``path``'s directory, then rename it over ``path``: a
    failure mid-write leaves the previous file whole and no stray file. The file gets the mode a plain
    ``open()`` would give it under the umask."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes the file private (0600)
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        cause = err.__context__
        if isinstance(cause, (KeyboardInterrupt, OSError)) and not isinstance(err, (KeyboardInterrupt, OSError)):
            # a writer that fails inside (Ctrl-C, a full disk) can make its own cleanup fail: torch.save's
            # zip writer then raises RuntimeError; what happened is the interrupt or the OSError
            err = cause
        if isinstance(err, OSError) and err.filename is None:  # a failed write names no file: name ours
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise err


def write_atomic(path, text: str) -> None:
    """Replace the text file ``path`` atomically (see :func:`replace_atomically`)."""
    replace_atomically(path, lambda f: f.write(text), binary=False)


def _umask() -> int:
    """The process's umask, read where Linux shows it (os.umask can only swap it, racing other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0)
    os.umask(umask)
    return umask


class DirectoryLock:
    """The exclusive lock of an existing directory, taken on construction: DirectoryLocked (naming the
    holder) when another process holds it, OSError when the lock file cannot be written. Released at the
    end of a ``with`` block or by the process's exit."""

    def __init__(self, directory):
        self.path = Path(directory) / LOCK_FILE
        self._fd = _acquire(self.path)

    def __enter__(self) -> "DirectoryLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # while still holding it: only the holder removes or replaces the file
        finally:
            os.close(self._fd)
            self._fd = None


def _acquire(path: Path) -> int:
    """The descriptor of ``path``, locked. The lock file is written in full to a temporary file beside it and
    linked into place (an atomic create-if-absent); a lock file that nobody holds is replaced by a rename,
    once this process holds its lock, so that two processes can never both believe they hold it."""
    program = Path(sys.argv[0])  # `python -m hapruned` runs hapruned/__main__.py: call it hapruned
    program = program.parent.name if program.name == "__main__.py" else program.name
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": shlex.join([program, *sys.argv[1:]]),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    for _ in range(100):  # another process can replace or remove the file between two steps: try again
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # as other files: whoever may write here may take a stale lock over
            os.write(fd, json.dumps(holder).encode())
            os.fsync(fd)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else can hold it
            try:
                os.link(tmp, path)
                return fd
            except FileExistsError:
                pass
            if _replace_unheld(path, tmp):
                return fd
        except BaseException:
            os.close(fd)
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        os.close(fd)
    raise DirectoryLocked(f"{str(path.parent)!r} is in use: its lock file {str(path)!r} keeps changing")


def _replace_unheld(path: Path, tmp: str) -> bool:
    """Rename ``tmp`` over the lock file ``path`` if nobody holds that file; DirectoryLocked naming its
    holder if somebody does; False if it changed meanwhile."""
    try:
        existing = os.open(path, os.O_RDWR | os.O_NOFOLLOW)  # write access: NFS needs it for an exclusive lock
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(existing, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise DirectoryLocked(f"{str(path.parent)!r} is in use by {_describe(os.pread(existing, 4096, 0))}; "
                                  f"wait for it to finish or stop it") from None
        if os.fstat(existing).st_ino != os.stat(path, follow_symlinks=False).st_ino:
            return False  # replaced between our open and our lock
        os.replace(tmp, path)
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(existing)


def _describe(data: bytes) -> str:
    """The holder recorded in a lock file, on one line (the file is untrusted: printable text only)."""
    try:
        holder = json.loads(data)
        fields = [str(holder[key]) for key in ("pid", "host", "command", "started")]
    except (ValueError, TypeError, KeyError, RecursionError):
        return "another process (its lock file does not say which)"
    pid, host, command, started = ("".join(c if c.isprintable() else "?" for c in field)[:300] for field in fields)
    return f"pid {pid} on {host} ({command}), started {started}"
