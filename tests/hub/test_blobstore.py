"""The blob store interface LFS objects and Xet xorbs share (local disk)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from bastion.storage import BlobMismatch, LocalBlobStore
from bastion.xet.store import XorbStore


def test_verified_content_is_stored_once_and_read_back_by_range(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "objects", tmp_path / "tmp")
    key = "ab" * 32  # a key of the caller's rule, not the sha256 of the bytes
    assert store.put_verified(key, b"0123456789") is True
    assert store.put_verified(key, b"other bytes") is False  # never rewritten
    assert store.read_range(key, 2, 6) == b"2345" and store.size(key) == 10
    with pytest.raises(ValueError, match="shorter"):
        store.read_range(key, 5, 20)
    with pytest.raises(ValueError):
        store.put_verified("../../etc/passwd", b"x")
    store.delete(key)
    assert not store.exists(key) and list((tmp_path / "tmp").iterdir()) == []


def test_sha256_staging_rejects_wrong_bytes_and_touches_existing_objects(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "objects", tmp_path / "tmp")
    data = os.urandom(1000)
    oid = hashlib.sha256(data).hexdigest()
    staged = store.stage()
    staged.write(data[:-1] + b"x")
    with pytest.raises(BlobMismatch, match="sha256 mismatch"):
        staged.commit(oid, len(data))
    assert not store.exists(oid)
    assert store.put_bytes(data) == oid
    path = store.local_path(oid)
    assert path is not None
    os.utime(path, (1_000_000, 1_000_000))
    assert store.put_bytes(data) == oid  # an upload of stored bytes marks them used (GC reads the mtime)
    assert path.stat().st_mtime > 1_000_000 and path.read_bytes() == data


def test_trash_and_restore(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "objects", tmp_path / "tmp")
    oid = store.put_bytes(b"weights")
    trash = store.trash(oid)
    assert trash is not None and not store.exists(oid) and trash.path.read_bytes() == b"weights"
    assert store.trash(oid) is None
    store.restore(oid, trash)
    assert store.exists(oid) and not trash.path.exists()


def test_xorbs_shards_and_index_live_in_blob_stores(tmp_path: Path) -> None:
    xet = XorbStore.local(tmp_path / "xet", tmp_path / "tmp")
    xorb = "cd" * 32
    assert xet.put_xorb(xorb, b"xorb bytes") and not xet.put_xorb(xorb, b"xorb bytes")
    assert xet.read_xorb(xorb, 5, 10) == b"bytes" and xet.has_xorb(xorb)
    assert xet.xorb_path(xorb) == tmp_path / "xet" / "xorbs" / "cd" / "cd" / xorb  # the layout on disk
    shard = xet.put_shard(b"shard")
    assert xet.shards.exists(shard) and shard == hashlib.sha256(b"shard").hexdigest()
    oid = "ef" * 32
    assert xet.indexed_file(oid) is None
    xet.index_file(oid, "12" * 32)
    assert xet.indexed_file(oid) == "12" * 32
    xet.unindex_file(oid)
    assert xet.indexed_file(oid) is None
