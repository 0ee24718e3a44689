"""The git hooks Bastion runs inside `git receive-pack`: pre-receive and proc-receive.

Thin clients of the server: stdlib only, started with `python -I -S` so a push pays
milliseconds for them; every decision is made by the server at BASTION_HOOK_URL.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
from typing import Any, BinaryIO
from urllib.parse import urlsplit

TIMEOUT = 3600  # a check of a very large push may take long; the server bounds its own work


def _call(hook: str, payload: dict[str, Any]) -> dict[str, Any]:
    """POST to the server's hook endpoint. Any failure rejects the push (fail closed)."""
    url = urlsplit(os.environ["BASTION_HOOK_URL"] + hook)
    # http.client, not urllib: proxy variables must never route this loopback call elsewhere.
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=TIMEOUT)
    body = json.dumps(payload).encode()
    try:
        conn.request("POST", url.path, body=body, headers={
            "Content-Type": "application/json", "X-Bastion-Push": os.environ["BASTION_PUSH_TOKEN"],
            "User-Agent": "bastion-git-hook"})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        try:
            message = json.loads(data).get("error") or data.decode("utf-8", "replace")
        except ValueError:
            message = data.decode("utf-8", "replace")
        raise RuntimeError(f"{resp.status}: {message}")
    result: dict[str, Any] = json.loads(data)
    return result


def _say(messages: list[str]) -> None:
    for message in messages:
        for line in message.splitlines() or [""]:
            sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _push_options_from_env() -> list[str]:
    """`git push -o …` options, as receive-pack hands them to pre-receive (githooks(5))."""
    try:
        count = int(os.environ.get("GIT_PUSH_OPTION_COUNT", "0"))
    except ValueError:
        count = 0
    return [os.environ.get(f"GIT_PUSH_OPTION_{i}", "") for i in range(count)]


def pre_receive() -> int:
    commands = [line.split() for line in sys.stdin.read().splitlines() if line.strip()]
    try:
        result = _call("pre-receive", {"commands": commands, "options": _push_options_from_env(),
                                       "quarantine": os.environ.get("GIT_QUARANTINE_PATH")})
    except Exception as exc:  # noqa: BLE001 - any failure must reject, with a reason
        _say([f"Bastion could not check this push: {exc}"])
        return 1
    _say(result.get("messages", []))
    return 0 if result.get("ok") else 1


def _read_pkt(stream: BinaryIO) -> bytes | None:
    """One pkt-line payload; None for a flush packet."""
    header = stream.read(4)
    if len(header) != 4:
        raise EOFError("proc-receive: unexpected end of input")
    length = int(header, 16)
    if length == 0:
        return None
    return stream.read(length - 4)


def _write_pkt(stream: BinaryIO, data: bytes | None) -> None:
    stream.write(b"0000" if data is None else b"%04x" % (len(data) + 4) + data)


def proc_receive() -> int:
    """The proc-receive protocol (githooks(5)): Bastion, not receive-pack, moves the refs."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    features: set[str] = set()
    while (pkt := _read_pkt(stdin)) is not None:
        _version, _, caps = pkt.rstrip(b"\n").partition(b"\0")
        features.update(caps.decode().split())
    # receive-pack sends the push options only to a hook that asks for them in its reply.
    _write_pkt(stdout, b"version=1\0push-options\n" if "push-options" in features else b"version=1\n")
    _write_pkt(stdout, None)
    stdout.flush()
    commands = []
    while (pkt := _read_pkt(stdin)) is not None:
        commands.append(pkt.decode().rstrip("\n").split(" ", 2))
    options = []
    if "push-options" in features:
        while (pkt := _read_pkt(stdin)) is not None:
            options.append(pkt.decode("utf-8", "replace").rstrip("\n"))
    try:
        result = _call("proc-receive", {"commands": commands, "options": options,
                                        "atomic": "atomic" in features})
        reports = {r["ref"]: r for r in result["results"]}
        _say(result.get("messages", []))
    except Exception as exc:  # noqa: BLE001 - every ref must get an answer
        _say([f"Bastion could not update refs: {exc}"])
        reports = {}
    for _old, _new, ref in commands:
        report = reports.get(ref)
        if report is not None and report.get("ok"):
            _write_pkt(stdout, f"ok {ref}\n".encode())
        else:
            reason = (report or {}).get("reason") or "not updated by the server"
            _write_pkt(stdout, f"ng {ref} {reason}\n".encode())
    _write_pkt(stdout, None)
    stdout.flush()
    return 0


def main(argv: list[str]) -> int:
    hooks = {"pre-receive": pre_receive, "proc-receive": proc_receive}
    if len(argv) != 2 or argv[1] not in hooks:
        sys.stderr.write("usage: hook.py pre-receive|proc-receive\n")
        return 2
    return hooks[argv[1]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
