"""Interop with the real client: hf_xet uploads to and downloads from a CAS built on bastion.xet.

The server (conftest.py) validates every xorb and shard hf_xet sends with our parser, answers
global-dedupe queries with our shards and serves reconstructions we plan, on 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path

import hf_xet
import pytest

from bastion.xet.chunking import chunk_boundaries, iter_chunks
from bastion.xet.hashing import chunk_hash, file_hash, hash_to_hex
from bastion.xet.packing import pack_file
from bastion.xet.xorb import CompressionScheme


def token() -> tuple[str, int]:
    return "test-token", int(time.time()) + 3600


def upload(endpoint: str, contents: list[bytes]) -> list:
    return hf_xet.upload_bytes(contents, endpoint, token(), token, None, "model")


def download(endpoint: str, file_id: str, size: int, dest: Path) -> bytes:
    hf_xet.download_files([hf_xet.PyXetDownloadInfo(str(dest), file_id, size)], endpoint, token(), token, None)
    return dest.read_bytes()


def content(seed: int, size: int) -> bytes:
    rng = random.Random(seed)
    floats = bytes(b for _ in range(size // 8) for b in (rng.randrange(256), rng.randrange(8), 0x80, 0x3F))
    return rng.randbytes(size // 2) + floats + bytes(size - size // 2 - len(floats))


def test_uploads_validate_and_rehash(cas: tuple) -> None:
    endpoint, state = cas
    files = [content(1, 3_000_000), b"small file", content(2, 200_000)]
    results = upload(endpoint, files)
    assert state.rejected == []
    assert ("POST", "/v1/shards") in state.requests
    for data, info in zip(files, results, strict=True):
        chunks = [(chunk_hash(c), len(c)) for c in iter_chunks(data)]
        assert info.hash == hash_to_hex(file_hash(chunks))
        entry = state.files[file_hash(chunks)]
        assert entry.size == len(data)
        assert entry.sha256_hex == hashlib.sha256(data).hexdigest()
        # The xorb chunks the client cut for this file are exactly our chunker's chunks.
        sizes = [
            state.xorbs[s.xorb_hash][1].chunks[i].uncompressed_size
            for s in entry.segments
            for i in range(s.chunk_start, s.chunk_end)
        ]
        ends = chunk_boundaries(data)
        assert sizes == [b - a for a, b in zip([0, *ends[:-1]], ends, strict=True)]


@pytest.mark.parametrize("v2", [True, False], ids=["v2", "v1-fallback"])
def test_client_downloads_what_it_uploaded(cas: tuple, tmp_path: Path, v2: bool) -> None:
    endpoint, state = cas
    data = content(3, 2_500_000)
    (info,) = upload(endpoint, [data])
    state.serve_v2 = v2
    assert download(endpoint, info.hash, len(data), tmp_path / "out") == data
    assert ("GET", f"/v1/reconstructions/{info.hash}") in state.requests or v2


def test_client_downloads_files_bastion_packed(cas: tuple, tmp_path: Path) -> None:
    """A file that reached Bastion by LFS, chunked and packed by us (all compression schemes)."""
    endpoint, state = cas
    data = content(4, 1_500_000)
    packed = pack_file([data[i : i + 100_000] for i in range(0, len(data), 100_000)], scheme=None)
    schemes = {c.scheme for _, x in packed.xorbs for c in x.chunks}
    assert {CompressionScheme.NONE, CompressionScheme.BG4_LZ4} <= schemes
    for body, xorb in packed.xorbs:
        state.add_xorb(body, xorb)
    state.files[packed.file.file_hash] = packed.file
    file_id = hash_to_hex(packed.file.file_hash)
    (local,) = hf_xet.hash_files([str(_write(tmp_path / "in", data))])
    assert local.hash == file_id
    assert download(endpoint, file_id, len(data), tmp_path / "out") == data


def test_global_dedupe_shard_is_understood(cas: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    """Re-uploading a slightly edited file sends only the changed chunks, thanks to our dedupe shard."""
    endpoint, state = cas
    data = content(5, 4_000_000)
    upload(endpoint, [data])
    sent_before = sum(len(body) for body, _ in state.xorbs.values())
    edited = data[:2_000_000] + b"an edit" + data[2_000_000:]
    (info,) = upload(endpoint, [edited])
    assert state.rejected == []
    sent_after = sum(len(body) for body, _ in state.xorbs.values()) - sent_before
    assert any(path.startswith("/v1/chunks/") for _, path in state.requests)
    with capsys.disabled():
        print(f"\ndedupe: re-upload of an edited {len(edited)}-byte file sent {sent_after} xorb bytes")
    assert sent_after < len(edited) * 0.2, f"second upload sent {sent_after} of {len(edited)} bytes"
    assert state.files[file_hash([(chunk_hash(c), len(c)) for c in iter_chunks(edited)])].size == len(edited)
    assert info.file_size == len(edited)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
