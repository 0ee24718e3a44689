"""git's stateless-rpc services as subprocesses, with request and response bodies streamed.

No pack is ever held whole in memory: request chunks go to the process's stdin as they
arrive (gunzipped on the fly, in bounded pieces) while its stdout streams back to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
import sys
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path

from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bastion.errors import BadRequest

log = logging.getLogger("bastion.gitserver")
CHUNK = 64 * 1024
GIT_PROTOCOL_RE = re.compile(r"^[A-Za-z0-9=:._-]{1,256}\Z")
HOOKS = ("pre-receive", "proc-receive")
HOOK_SCRIPT = Path(__file__).with_name("hook.py")

# Processes whose response nobody reads any more but which must finish (a push whose client
# went away keeps its ref updates consistent); held here so they are not garbage-collected.
_reaping: set[asyncio.Task[None]] = set()


def git_env(data_dir: Path, git_protocol: str | None) -> dict[str, str]:
    """A clean environment: no user or system git config can change what the server runs."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(data_dir), "LANG": "C",
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0"}
    if git_protocol and GIT_PROTOCOL_RE.match(git_protocol):
        env["GIT_PROTOCOL"] = git_protocol
    return env


def ensure_hooks(data_dir: Path) -> Path:
    """The hooks directory every receive-pack runs with (core.hooksPath), written once per install.

    Hooks are not copied into each repository: one directory, passed on the command line,
    cannot be bypassed by a repository's own `hooks/` and needs no migration of old repos.
    """
    hooks_dir = data_dir / "git-hooks"
    hooks_dir.mkdir(parents=True, exist_ok=True)
    for hook in HOOKS:
        script = (f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -I -S {shlex.quote(str(HOOK_SCRIPT))} "
                  f"{hook}\n")
        path = hooks_dir / hook
        try:
            if path.read_text() == script:
                continue
        except FileNotFoundError:
            pass
        tmp = hooks_dir / f".{hook}.{os.getpid()}"
        tmp.write_text(script)
        tmp.chmod(0o755)
        os.replace(tmp, path)
    return hooks_dir


async def _feed(proc: asyncio.subprocess.Process, body: AsyncIterator[bytes], gzipped: bool) -> None:
    """Copy the request body into the process's stdin, then close it (EOF ends the request)."""
    assert proc.stdin is not None
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
    try:
        async for chunk in body:
            if inflate is None:
                proc.stdin.write(chunk)
                await proc.stdin.drain()
                continue
            data = chunk
            # Inflate in bounded pieces so a small compressed body cannot balloon in memory.
            while data:
                out = inflate.decompress(data, CHUNK)
                data = inflate.unconsumed_tail
                proc.stdin.write(out)
                await proc.stdin.drain()
        if inflate is not None:
            proc.stdin.write(inflate.flush())
            await proc.stdin.drain()
    except zlib.error:
        log.warning("git request body is not valid gzip")
    except (BrokenPipeError, ConnectionResetError):
        pass  # git stopped reading: it reports why on stdout
    except ClientDisconnect:
        pass  # the client went away mid-request: EOF makes git abandon it (a push leaves no trace)
    finally:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.close()


async def _drain_stderr(proc: asyncio.subprocess.Process, what: str) -> None:
    assert proc.stderr is not None
    while line := await proc.stderr.readline():
        log.info("%s: %s", what, line.decode("utf-8", "replace").rstrip()[:500])


async def _reap(proc: asyncio.subprocess.Process, kill: bool, tasks: list[asyncio.Task[None]],
                on_exit: Callable[[], None] | None) -> None:
    try:
        if kill and proc.returncode is None:
            proc.kill()
        if proc.stdout is not None:
            while await proc.stdout.read(CHUNK):
                pass
        await proc.wait()
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        if on_exit is not None:
            on_exit()


async def run_service(name: str, args: list[str], env: dict[str, str], body: AsyncIterator[bytes] | None, *,
                      gzipped: bool = False, prefix: bytes = b"", kill_on_disconnect: bool = True,
                      on_exit: Callable[[], None] | None = None) -> AsyncGenerator[bytes, None]:
    """Start `git args…` and return its stdout as an async stream, `prefix` first.

    The request body is fed concurrently (git may answer before it has read everything).
    When the client goes away, an upload-pack is killed; a receive-pack is left to finish so a
    push is applied or rejected whole, never cut in the middle of its ref updates.
    """
    proc = await asyncio.create_subprocess_exec(
        "git", *args, env=env, stdin=asyncio.subprocess.PIPE if body is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    tasks = [asyncio.create_task(_drain_stderr(proc, name))]
    if body is not None:
        tasks.append(asyncio.create_task(_feed(proc, body, gzipped)))

    async def stream() -> AsyncGenerator[bytes, None]:
        assert proc.stdout is not None
        finished = False
        try:
            if prefix:
                yield prefix
            while chunk := await proc.stdout.read(CHUNK):
                yield chunk
            finished = True
        finally:
            # No awaiting here: on a client disconnect this runs inside a cancelled scope.
            task = asyncio.get_running_loop().create_task(
                _reap(proc, kill_on_disconnect and not finished, tasks, on_exit))
            _reaping.add(task)
            task.add_done_callback(_reaping.discard)

    return stream()


class GitResponse(Response):
    """A streamed git response that leaves `receive` to the request body.

    Starlette's StreamingResponse watches for a disconnect by calling `receive()` itself, which
    would steal the chunks of a request body still being fed to git; git needs both at once.
    """

    def __init__(self, stream: AsyncGenerator[bytes, None], media_type: str) -> None:
        super().__init__(status_code=200, media_type=media_type, headers={"Cache-Control": "no-cache"})
        del self.headers["content-length"]
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for chunk in self.stream:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await self.stream.aclose()


def check_gzip(content_encoding: str | None) -> bool:
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return False
    if encoding in ("gzip", "x-gzip"):
        return True
    raise BadRequest(f"Unsupported Content-Encoding {content_encoding!r}")
