"""Child processes of the tests, and the check that none outlives its test.

Every child runs in a session of its own with SIGINT at its default (a shell that starts the suite in
the background ignores SIGINT, and children inherit that, so a test's Ctrl-C would never arrive), and
when its test is done the whole session is killed, whatever happened: nothing it started keeps running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid

# Runs argv[1:] with SIGINT at its default disposition: an exec keeps an ignored signal ignored, so the
# child resets it first (in the child itself, not in a preexec_fn, which is unsafe in a threaded parent).
_DEFAULT_SIGINT = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])"


@contextlib.contextmanager
def started(argv, **popen_kwargs):
    """``subprocess.Popen(argv, **popen_kwargs)`` in a new session with the default SIGINT; on exit from the
    block every process of that session is killed and the child reaped."""
    process = subprocess.Popen([sys.executable, "-c", _DEFAULT_SIGINT, *map(str, argv)], start_new_session=True,
                               **popen_kwargs)
    try:
        yield process
    finally:
        kill_session(process)


def kill_session(process: subprocess.Popen) -> None:
    """SIGKILL to every process of the session ``process`` leads (its process group), then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def run(argv, timeout: float, input: str | None = None, **popen_kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)`` with a child
    started as :func:`started` starts it: on a timeout, or when the child leaves processes behind, they are
    killed."""
    stdin = subprocess.PIPE if input is not None else subprocess.DEVNULL
    with started(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_kwargs) as process:
        stdout, stderr = process.communicate(input=input, timeout=timeout)
    return subprocess.CompletedProcess(list(argv), process.returncode, stdout, stderr)


# ------------------------------------------------------------------------------------- the safety net
# Every process the test session starts inherits this variable (and its descendants do, whatever session
# or parent they end up with), so a process left behind is found by its environment.
SESSION_VARIABLE = "HAPRUNED_TEST_SESSION"
# helpers that Python's multiprocessing keeps for the whole session by design
_SESSION_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
_token = uuid.uuid4().hex


def mark_session() -> None:
    """Give this session's processes its mark: a token added to the variable, so that a test session run
    inside another one (a test that runs pytest) checks its own processes, and the outer one all of them."""
    outer = os.environ.get(SESSION_VARIABLE)
    os.environ[SESSION_VARIABLE] = f"{outer}:{_token}" if outer else _token


def descendants() -> dict[int, str]:
    """pid -> command line of the live processes (not zombies) that this test session started, at any depth."""
    if not os.path.isdir("/proc/self"):
        return {}
    prefix = f"{SESSION_VARIABLE}=".encode()
    session_start = _state_and_start("self")[1]
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            state, start = _state_and_start(name)
            # older than this session, or finished and waiting only to be reaped: not ours to check
            if start < session_start or state in (b"Z", b"X") or not _marked(_read(name, "environ"), prefix):
                continue
            command = _read(name, "cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # it ended meanwhile, or is not ours to read
            continue
        if not any(helper in command for helper in _SESSION_HELPERS):
            found[int(name)] = command
    return found


def _marked(environ: bytes, prefix: bytes) -> bool:
    """Whether a process environment carries this session's token."""
    return any(entry.startswith(prefix) and _token.encode() in entry[len(prefix):].split(b":")
               for entry in environ.split(b"\0"))


def _read(pid: str, name: str) -> bytes:
    with open(f"/proc/{pid}/{name}", "rb") as f:
        return f.read()


def _state_and_start(pid: str) -> tuple[bytes, int]:
    """A process's state letter and start time (clock ticks after boot), from /proc/PID/stat."""
    fields = _read(pid, "stat").rsplit(b")", 1)[1].split()  # after the command, which may hold spaces
    return fields[0], int(fields[19])


def left_behind(grace: float = 10.0) -> dict[int, str]:
    """The processes of this session still alive after up to ``grace`` seconds; they are killed (so that the
    next test starts with none)."""
    deadline = time.monotonic() + grace
    while True:
        left = descendants()
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):  # reap it if it is our own child
            os.waitpid(pid, 0)
    return left
