"""Per-request timing of the security layers, reported in a `Server-Timing` header when enabled.

`BASTION_SERVER_TIMING=1` adds `Server-Timing: auth;dur=…, authz;dur=…` to every response: the time
spent turning the request's credentials into a Principal, and in `require()`. Off by default (it is
operational detail a public deployment need not show); the authz benchmark turns it on to measure
the cost of authentication + authorization inside the real server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# One mutable dict per request: request code runs in threadpool threads with a copy of the context,
# and a copy still points at the same dict.
_timings: ContextVar[dict[str, float] | None] = ContextVar("bastion_request_timings", default=None)


def start_request_timings() -> dict[str, float]:
    timings: dict[str, float] = {}
    _timings.set(timings)
    return timings


@contextmanager
def timed(name: str) -> Iterator[None]:
    """Add the block's wall time, in milliseconds, to this request's `name` figure."""
    timings = _timings.get()
    if timings is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + (time.perf_counter() - start) * 1000


def server_timing_header(timings: dict[str, float]) -> bytes:
    return ", ".join(f"{name};dur={ms:.3f}" for name, ms in timings.items()).encode()
