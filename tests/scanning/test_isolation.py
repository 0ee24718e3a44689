"""Scan processes (bastion.scanning.isolation): a result, or ScanAborted saying which limit was hit."""

from __future__ import annotations

import os
import signal
import time

import pytest

from bastion.scanning.isolation import ProcessLimits, ScanAborted, run_isolated

LIMITS = ProcessLimits(memory_mb=256, cpu_seconds=30, wall_seconds=60)


def add(a: int, b: int) -> int:
    print("noise on stdout")  # must not reach the zygote's conversation with the server
    return a + b


def fail() -> None:
    raise RuntimeError("scanner bug")


def crash() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def hog_memory() -> list[bytes]:
    return [bytes(1 << 20) for _ in range(10_000)]


def spin() -> None:
    while True:
        pass


def sleep() -> None:
    time.sleep(600)


def test_a_result_comes_back_and_the_process_is_fresh_each_time() -> None:
    assert run_isolated(add, (2, 3), LIMITS) == 5
    first = run_isolated(os.getpid, (), LIMITS)
    assert first != os.getpid() and run_isolated(os.getpid, (), LIMITS) != first


@pytest.mark.parametrize(("func", "limits", "summary", "retryable"), [
    (fail, LIMITS, "scan failed: RuntimeError: scanner bug", True),
    (crash, LIMITS, "scan process died (signal SIGSEGV)", True),
    (hog_memory, LIMITS, "scan exceeded its memory limit (256 MiB)", False),
    (spin, ProcessLimits(256, 1, 60), "scan exceeded its CPU time limit (1 s)", False),
    (sleep, ProcessLimits(256, 30, 1), "timed out after 1s", True),
])
def test_every_way_a_scan_ends_without_a_result_is_named(func, limits, summary, retryable) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ScanAborted) as exc:
        run_isolated(func, (), limits)
    assert (exc.value.summary, exc.value.retryable) == (summary, retryable)
    assert run_isolated(add, (1, 1), LIMITS) == 2  # and the next scan runs as usual


def killed() -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer would do


def test_a_kill_that_is_not_the_cpu_limit_is_not_reported_as_one() -> None:
    with pytest.raises(ScanAborted) as exc:
        run_isolated(killed, (), LIMITS)
    assert (exc.value.summary, exc.value.retryable) == ("scan process died (signal SIGKILL)", True)
