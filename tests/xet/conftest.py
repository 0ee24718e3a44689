"""A throwaway CAS server on 127.0.0.1 built only from bastion.xet, for driving the real hf_xet client.

It validates every xorb and shard the client uploads with the library under test and answers
reconstruction queries from what it stored, so a round trip proves both directions interoperate.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bastion.errors import BastionError
from bastion.xet.hashing import hash_to_hex, hex_to_hash
from bastion.xet.reconstruction import (
    FetchRange,
    XorbLayout,
    parse_byte_ranges,
    parse_range_header,
    plan_reconstruction,
)
from bastion.xet.shard import FileEntry, XorbEntry, dedupe_shard, parse_shard, verify_upload_shard
from bastion.xet.xorb import Xorb, parse_xorb


@dataclass
class CasState:
    xorbs: dict[bytes, tuple[bytes, Xorb]] = field(default_factory=dict)
    files: dict[bytes, FileEntry] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    serve_v2: bool = True
    hmac_key: bytes = field(default_factory=lambda: os.urandom(32))

    def add_xorb(self, body: bytes, xorb: Xorb) -> None:
        self.xorbs[xorb.hash] = (body, xorb)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: CasState

    def log_message(self, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", ctype: str = "application/json", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: object) -> None:
        self._send(status, json.dumps(obj).encode())

    def _error(self, exc: BastionError) -> None:
        self.state.rejected.append(exc.message)
        self._json(exc.status, {"error": exc.message})

    def do_POST(self) -> None:
        body = self._body()
        path = urllib.parse.urlsplit(self.path).path
        self.state.requests.append(("POST", path))
        parts = path.strip("/").split("/")
        try:
            if parts[:2] == ["v1", "xorbs"] and len(parts) == 4:
                xorb = parse_xorb(body, hex_to_hash(parts[3]))
                inserted = xorb.hash not in self.state.xorbs
                self.state.add_xorb(body, xorb)
                self._json(200, {"was_inserted": inserted})
            elif path == "/v1/shards":
                shard = parse_shard(body)
                stored = self.state.xorbs

                def lookup(h: bytes) -> list[tuple[bytes, int]] | None:
                    return stored[h][1].chunk_list() if h in stored else None

                check = verify_upload_shard(shard, lookup)
                for f in check.files:
                    self.state.files[f.file_hash] = f
                self._json(200, {"result": 1})
            else:
                self._json(404, {"error": "not found"})
        except BastionError as exc:
            self._error(exc)

    def do_HEAD(self) -> None:
        self.state.requests.append(("HEAD", self.path))
        self._send(404)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        self.state.requests.append(("GET", url.path))
        parts = url.path.strip("/").split("/")
        try:
            if parts[1:2] == ["reconstructions"] and len(parts) == 3:
                self._reconstruction(parts[0], parts[2])
            elif parts[:2] == ["v1", "chunks"] and len(parts) == 4:
                self._dedupe(hex_to_hash(parts[3]))
            elif parts[0] == "fetch":
                self._fetch(parts[1], urllib.parse.parse_qs(url.query)["r"][0])
            else:
                self._json(404, {"error": "not found"})
        except BastionError as exc:
            self._error(exc)

    def _reconstruction(self, version: str, file_id: str) -> None:
        entry = self.state.files.get(hex_to_hash(file_id))
        if entry is None or (version == "v2" and not self.state.serve_v2):
            self._json(404, {"error": "not found"})
            return
        byte_range = parse_range_header(self.headers.get("Range"), entry.size)
        layouts = {h: XorbLayout.from_xorb(x) for h, (_, x) in self.state.xorbs.items()}
        plan = plan_reconstruction(entry.segments, layouts, byte_range)
        base = f"http://{self.headers['Host']}/fetch"

        def one(h: bytes, r: FetchRange) -> str:
            return f"{base}/{hash_to_hex(h)}?r={r.http_range}"

        if version == "v1":
            self._json(200, plan.to_v1(one))
        else:
            self._json(200, plan.to_v2(lambda h, rs: one(h, rs[0]), max_ranges_per_url=1))

    def _dedupe(self, chunk: bytes) -> None:
        for _, xorb in self.state.xorbs.values():
            if any(c.hash == chunk for c in xorb.chunks):
                entry = XorbEntry.from_chunk_list(xorb.hash, xorb.chunk_list())
                body = dedupe_shard([entry], self.state.hmac_key, int(time.time()) + 3600)
                self._send(200, body, "application/octet-stream")
                return
        self._json(404, {"error": "chunk not found"})

    def _fetch(self, xorb_hex: str, signed: str) -> None:
        # The URL names the one range it grants, like a signed URL; the Range header must match it.
        body = self.state.xorbs[hex_to_hash(xorb_hex)][0]
        ranges = parse_byte_ranges(self.headers.get("Range", ""))
        if len(ranges) != 1 or f"{ranges[0][0]}-{ranges[0][1] - 1}" != signed:
            self._json(403, {"error": "range not signed"})
            return
        start, end = ranges[0]
        self._send(
            206, body[start:end], "application/octet-stream", Content_Range=f"bytes {start}-{end - 1}/{len(body)}"
        )


@pytest.fixture
def cas() -> Iterator[tuple[str, CasState]]:
    """(endpoint, state) of a CAS server listening on 127.0.0.1 for the duration of a test."""
    state = CasState()
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
