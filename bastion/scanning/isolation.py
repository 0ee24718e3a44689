"""Scans in child processes under OS resource limits: a hostile file can only fail its own scan.

A scan runs in a process of its own, forked for it by a "zygote": a small helper process that has
the scanners imported and does nothing else (so a fork costs milliseconds, and every scan starts
from the same clean heap with its own CPU clock). The scan process applies RLIMIT_DATA (heap and
anonymous memory; a scanner's read-only mmap of the file does not count), RLIMIT_CPU and no core
dumps, runs one function and writes its pickled result to a pipe. The zygote relays those bytes,
never unpickling them, or says how the scan ended: over a limit, killed at the wall-clock limit,
dead. The server only ever receives a result or a `ScanAborted` naming the limit that was hit.

Why not multiprocessing: its forkserver and spawn children re-import the parent's `__main__` (the
whole `bastion.cli` and its database stack) on every start, seconds per scan on a busy machine.
Zygotes are pooled (one per concurrent scan) and replaced when one breaks.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, TypeVar

T = TypeVar("T")
MiB = 1024 * 1024
# Imported once by each zygote, so a scan's fork starts with the scanners loaded. Keep this list
# small: the zygote's heap is inherited by every scan and counts toward its memory limit.
# The format scanners' heavy parsers (onnx, gguf, safetensors) are imported by the scan that needs one.
PRELOAD = ("bastion.scanning.scanners.pickles", "bastion.scanning.scanners.secrets",
           "bastion.scanning.scanners.model_formats")
MAX_RESULT_BYTES = 64 * MiB  # a result larger than this is not a scanner's result
IDLE_ZYGOTES = 4
_HEADER = struct.Struct("!BQ")
_OK, _MEMORY, _ERROR, _DIED, _TIMEOUT, _TOO_LARGE = range(6)


@dataclass(frozen=True)
class ProcessLimits:
    memory_mb: int
    cpu_seconds: int
    wall_seconds: float


class ScanAborted(Exception):
    """The scan gave no result: a limit was hit or its process died. `retryable` is False when
    running it again would hit the same limit."""

    def __init__(self, summary: str, *, retryable: bool) -> None:
        super().__init__(summary)
        self.summary = summary
        self.retryable = retryable


def run_isolated(func: Callable[..., T], args: tuple[Any, ...], limits: ProcessLimits) -> T:
    """`func(*args)` in a process of its own under `limits`. `func` must be a module-level function;
    `args` and the result are pickled. Raises ScanAborted when the scan gives no result."""
    zygote = _POOL.take()
    try:
        kind, payload = zygote.run(pickle.dumps((func, args, limits), protocol=pickle.HIGHEST_PROTOCOL),
                                   limits.wall_seconds + 60)
    except BaseException:
        zygote.close()  # broken, or we were interrupted mid-conversation: never reuse it
        raise
    _POOL.give_back(zygote)
    if kind == _OK:
        # Written by our own scanner code in the scan process; the file's bytes never reach here raw.
        return pickle.loads(payload)  # type: ignore[no-any-return]  # noqa: S301
    if kind == _MEMORY:
        raise ScanAborted(f"scan exceeded its memory limit ({limits.memory_mb} MiB)", retryable=False)
    if kind == _TIMEOUT:
        raise ScanAborted(f"timed out after {limits.wall_seconds:g}s", retryable=True)
    if kind == _TOO_LARGE:
        raise ScanAborted(f"scan result larger than {MAX_RESULT_BYTES} bytes", retryable=False)
    if kind == _ERROR:
        raise ScanAborted(f"scan failed: {payload.decode(errors='replace')}", retryable=True)
    raw_status, cpu_used = payload.split()  # _DIED: the wait status and the CPU seconds it used
    status = int(raw_status)
    signalled = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    if signalled == signal.SIGXCPU or (signalled == signal.SIGKILL and float(cpu_used) >= limits.cpu_seconds):
        # SIGXCPU at the soft CPU limit, SIGKILL at the hard one a second later.
        raise ScanAborted(f"scan exceeded its CPU time limit ({limits.cpu_seconds} s)", retryable=False)
    how = (f"signal {signal.Signals(signalled).name}" if signalled is not None
           else f"exit status {os.waitstatus_to_exitcode(status)}")
    raise ScanAborted(f"scan process died ({how})", retryable=True)


# ---- the server side: a pool of zygotes -----------------------------------------------------------

class _Zygote:
    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        # Its own session: killing the group ends the zygote and any scan it is running.
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from bastion.scanning.isolation import zygote_main; zygote_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.requests: IO[bytes] = self.proc.stdin
        self.answers: IO[bytes] = self.proc.stdout

    def run(self, request: bytes, timeout: float) -> tuple[int, bytes]:
        try:
            self.requests.write(struct.pack("!Q", len(request)) + request)
            self.requests.flush()
        except OSError:
            raise ScanAborted("the scan helper process died", retryable=True) from None
        deadline = time.monotonic() + timeout
        head = _read_exactly(self.answers, _HEADER.size, deadline)
        kind, size = _HEADER.unpack(head)
        return kind, _read_exactly(self.answers, size, deadline)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for stream in (self.requests, self.answers):
            with contextlib.suppress(OSError):
                stream.close()


class _Pool:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[_Zygote] = []

    def take(self) -> _Zygote:
        with self.lock:
            while self.idle:
                zygote = self.idle.pop()
                if zygote.alive():
                    return zygote
                zygote.close()
        return _Zygote()

    def give_back(self, zygote: _Zygote) -> None:
        with self.lock:
            if len(self.idle) < IDLE_ZYGOTES and zygote.alive():
                self.idle.append(zygote)
                return
        zygote.close()


_POOL = _Pool()


def _read_exactly(stream: IO[bytes], n: int, deadline: float) -> bytes:
    fd = stream.fileno()
    chunks: list[bytes] = []
    while n:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise ScanAborted("the scan helper process did not answer", retryable=True)
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise ScanAborted("the scan helper process died", retryable=True)
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


# ---- the zygote and the scan processes -------------------------------------------------------------

def zygote_main() -> None:
    """Serve requests from the server on stdin, one at a time, until stdin closes."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    # The conversation keeps its own descriptors; anything printed goes to stderr (the server's log).
    requests, answers = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    while True:
        head = _read_all(requests, 8)
        if len(head) < 8:
            return  # the server went away
        (size,) = struct.unpack("!Q", head)
        request = _read_all(requests, size)
        if len(request) < size:
            return
        try:
            kind, payload = _fork_scan(request, (requests, answers))
        except Exception as exc:  # noqa: BLE001 - e.g. a request naming a function that cannot be imported
            kind, payload = _ERROR, f"{type(exc).__name__}: {exc}"[:500].encode()
        _write_all(answers, _HEADER.pack(kind, len(payload)) + payload)


def _fork_scan(request: bytes, conversation: tuple[int, int]) -> tuple[int, bytes]:
    func, args, limits = pickle.loads(request)  # noqa: S301 - from the server, which started us
    readable, writable = os.pipe()
    pid = os.fork()
    if pid == 0:  # the scan process: never returns
        os.close(readable)
        for fd in conversation:
            os.close(fd)
        _scan_process(writable, limits, func, args)
    os.close(writable)
    deadline = time.monotonic() + limits.wall_seconds
    received: list[bytes] = []
    size = 0
    outcome: tuple[int, bytes] | None = None
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([readable], [], [], remaining)[0]:
                outcome = (_TIMEOUT, b"")
                break
            chunk = os.read(readable, 1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_RESULT_BYTES + 1:
                outcome = (_TOO_LARGE, b"")
                break
            received.append(chunk)
    finally:
        os.close(readable)
        if outcome is not None:
            os.kill(pid, signal.SIGKILL)
        _, status, usage = os.wait4(pid, 0)
    if outcome is not None:
        return outcome
    message = b"".join(received)
    if message and message[0] in (_OK, _MEMORY, _ERROR) and os.WIFEXITED(status) and not os.WEXITSTATUS(status):
        return message[0], message[1:]
    return _DIED, f"{status} {usage.ru_utime + usage.ru_stime:.3f}".encode()


def _scan_process(writable: int, limits: ProcessLimits, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
    code = 1
    try:
        # Nothing but the result pipe: the scan cannot write into the zygote's conversation.
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.close(devnull)
        memory = limits.memory_mb * MiB
        resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU would dump core
        try:
            message = bytes([_OK]) + pickle.dumps(func(*args), protocol=pickle.HIGHEST_PROTOCOL)
        except MemoryError:
            message = bytes([_MEMORY])
        except Exception as exc:  # noqa: BLE001 - reported to the server as the scan's failure
            message = bytes([_ERROR]) + f"{type(exc).__name__}: {exc}"[:500].encode()
        _write_all(writable, message)
        code = 0
    except MemoryError:
        with contextlib.suppress(BaseException):
            _write_all(writable, bytes([_MEMORY]))
            code = 0
    finally:
        os._exit(code)


def _read_all(fd: int, n: int) -> bytes:
    chunks: list[bytes] = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
