"""The S3 BlobStore against a real S3-protocol server (moto's standalone server on loopback): what it
stores hashes to its key (verified before and after the upload), multipart uploads for large objects,
ranged reads, server-side encryption passed through, garbage collection's trash and restore."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
from pathlib import Path

import pytest

from bastion.storage import BlobMismatch
from bastion.storage.s3 import S3BlobStore
from bastion.storage.s3_config import MiB, S3Config
from tests.storage.conftest import ACCESS_KEY, SECRET_KEY, MotoServer


def _store(moto: MotoServer, tmp_path: Path, **extra: object) -> S3BlobStore:
    config = S3Config(bucket=moto.new_bucket(), endpoint_url=moto.url, region_name="us-east-1",
                      access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY, addressing_style="path",
                      max_attempts=3, **extra)  # type: ignore[arg-type]
    return S3BlobStore(config, tmp_path / "staging", "lfs")


def _bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def test_a_verified_object_is_stored_read_back_and_listed(moto: MotoServer, tmp_path: Path) -> None:
    store = _store(moto, tmp_path, sse="AES256")
    data = _bytes(1, 300_000)
    oid = store.put_bytes(data)
    assert oid == hashlib.sha256(data).hexdigest()
    assert store.exists(oid) and store.size(oid) == len(data) and store.local_path(oid) is None
    with store.open(oid) as fh:
        assert fh.read() == data
    assert store.read_range(oid, 10, 1010) == data[10:1010]
    assert b"".join(store.stored_object(oid).iter_bytes(5, 200_005)) == data[5:200_005]
    assert list(store.stored_keys()) == [oid]
    # Stored where the layout says, with its sha256 recorded and encrypted as configured.
    key = f"lfs/{oid[:2]}/{oid[2:4]}/{oid}"
    assert moto.keys(store.config.bucket) == [key]
    head = moto.client().head_object(Bucket=store.config.bucket, Key=key)
    assert head["Metadata"]["sha256"] == oid and head["ServerSideEncryption"] == "AES256"
    with pytest.raises(ValueError):
        store.read_range(oid, 0, len(data) + 1)
    assert not list(tmp_path.joinpath("staging").iterdir())  # nothing left in staging


def test_large_objects_go_up_in_parts_and_their_composite_checksum_is_checked(moto: MotoServer,
                                                                               tmp_path: Path) -> None:
    store = _store(moto, tmp_path, multipart_threshold=5 * MiB, multipart_chunk_size=5 * MiB)
    data = _bytes(2, 12 * MiB + 17)
    oid = hashlib.sha256(data).hexdigest()
    staged = store.stage()
    for i in range(0, len(data), MiB):
        staged.write(data[i:i + MiB])
    staged.commit(oid, len(data))
    head = moto.client().head_object(Bucket=store.config.bucket, Key=store._key(oid), ChecksumMode="ENABLED")
    parts = [hashlib.sha256(data[i:i + 5 * MiB]).digest() for i in range(0, len(data), 5 * MiB)]
    composite = base64.b64encode(hashlib.sha256(b"".join(parts)).digest()).decode()
    assert len(parts) == 3 and head["ChecksumSHA256"] in (composite, f"{composite}-3")  # the parts' checksums
    assert hashlib.sha256(b"".join(store.stored_object(oid).iter_bytes())).hexdigest() == oid


def test_content_that_does_not_match_its_oid_is_never_stored(moto: MotoServer, tmp_path: Path) -> None:
    store = _store(moto, tmp_path)
    data = _bytes(3, 5000)
    staged = store.stage()
    staged.write(data)
    with pytest.raises(BlobMismatch, match="sha256 mismatch"):
        staged.commit("0" * 64, len(data))
    staged = store.stage()
    staged.write(data)
    with pytest.raises(BlobMismatch, match="size mismatch"):
        staged.commit(hashlib.sha256(data).hexdigest(), len(data) + 1)

    async def chunks():  # type: ignore[no-untyped-def]
        yield data
        yield b"more"

    with pytest.raises(BlobMismatch):
        asyncio.run(store.put_stream(chunks(), hashlib.sha256(data).hexdigest(), len(data)))
    assert moto.keys(store.config.bucket) == []
    assert not list(tmp_path.joinpath("staging").iterdir())


def test_a_server_that_stores_other_bytes_is_caught_and_the_object_removed(moto: MotoServer, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """What the server reports after the upload is compared with the staged bytes: an upload whose stored
    bytes differ (here the transfer sends another file of the same size) fails and leaves nothing behind."""
    store = _store(moto, tmp_path)
    data = _bytes(4, 70_000)
    decoy = tmp_path / "decoy"
    decoy.write_bytes(_bytes(5, 70_000))
    real_upload = store.client.upload_file

    def tampered(filename, bucket, key, ExtraArgs=None, Config=None):  # type: ignore[no-untyped-def]  # noqa: N803
        return real_upload(str(decoy), bucket, key, ExtraArgs=ExtraArgs, Config=Config)

    monkeypatch.setattr(store.client, "upload_file", tampered)
    with pytest.raises(BlobMismatch, match="checksum"):
        store.put_bytes(data)
    assert moto.keys(store.config.bucket) == []


def test_keys_kept_once_stored_and_gc_trash_and_restore(moto: MotoServer, tmp_path: Path) -> None:
    store = _store(moto, tmp_path)
    key = "ab" * 32
    assert store.put_verified(key, b"first") is True
    assert store.put_verified(key, b"second") is False  # an existing object is never rewritten
    assert store.read_range(key, 0, 5) == b"first"
    # A staged write under the same key without `replace` keeps the stored object too.
    staged = store.stage()
    staged.write(b"other")
    staged.commit_verified(key)
    assert store.read_range(key, 0, 5) == b"first"

    trash = store.trash(key)
    assert trash is not None and not store.exists(key) and list(store.stored_keys()) == []
    assert abs(trash.mtime - __import__("time").time()) < 300
    store.restore(key, trash)
    assert store.read_range(key, 0, 5) == b"first" and list(store.stored_keys()) == [key]
    trash = store.trash(key)
    assert trash is not None
    trash.discard()
    assert moto.keys(store.config.bucket) == [] and store.trash(key) is None
    store.delete(key)  # missing is fine
    with pytest.raises(FileNotFoundError):
        store.open(key)


def test_retries_with_backoff_are_configured(moto: MotoServer, tmp_path: Path) -> None:
    store = _store(moto, tmp_path)
    assert store.client.meta.config.retries == {"total_max_attempts": 3, "mode": "standard"}


@pytest.mark.parametrize("bad,message", [
    ({"bucket": ""}, "needs a bucket"),
    ({"sse": "rot13"}, "sse must be one of"),
    ({"sse_kms_key_id": "k"}, "needs sse"),
    ({"multipart_chunk_size": 1024}, "at least 5 MiB"),
])
def test_bad_s3_settings_are_refused(bad: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        S3Config(**{"bucket": "b-bucket", **bad})  # type: ignore[arg-type]


def test_an_unreachable_store_is_a_503_never_a_500(tmp_path: Path) -> None:
    """Requests are retried; when the service stays unreachable the caller gets StorageUnavailable (503)."""
    from bastion.errors import StorageUnavailable
    from tests.conftest import free_port

    config = S3Config(bucket="bastion-gone", endpoint_url=f"http://127.0.0.1:{free_port()}", region_name="us-east-1",
                      access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY, addressing_style="path",
                      max_attempts=2, connect_timeout=1, read_timeout=1)
    store = S3BlobStore(config, tmp_path / "staging", "lfs")
    with pytest.raises(StorageUnavailable) as failed:
        store.exists("ab" * 32)
    assert failed.value.status == 503
    with pytest.raises(StorageUnavailable):
        store.put_bytes(b"data")
    assert not list(tmp_path.joinpath("staging").iterdir())
