"""S3BlobStore: the BlobStore interface on S3-compatible object storage (boto3).

The store never lies, as on local disk: content is staged in a local folder, hashed and verified
there, then uploaded (multipart above `multipart_threshold`, every part with an SHA-256 checksum the
server checks); after the upload the object's size, its recorded sha256 and the checksum the server
reports are compared with the staged bytes, and a mismatch deletes the object (BlobMismatch).
Requests are retried with exponential backoff (botocore's `standard` retry mode); server-side
encryption settings are sent with every write and copy.

Layout in the bucket: `<prefix><aa>/<bb>/<key>` as on disk; objects moved aside by garbage
collection under `<prefix>.trash/`.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import os
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from bastion.errors import StorageUnavailable
from bastion.storage.blobstore import COPY_CHUNK, OID_RE, BlobMismatch, BlobStore, Trashed
from bastion.storage.s3_config import MAX_PARTS, S3Config

log = logging.getLogger("bastion.storage")
def _unavailable(exc: Exception) -> StorageUnavailable:
    log.warning("object storage request failed: %s", exc)
    return StorageUnavailable(f"The object storage of this region failed ({type(exc).__name__}); try again")


def _not_found(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class S3Trashed(Trashed):
    def __init__(self, store: S3BlobStore, key: str, mtime: float) -> None:
        self.store, self.key, self._mtime = store, key, mtime

    @property
    def mtime(self) -> float:
        return self._mtime

    def discard(self) -> None:
        self.store.client.delete_object(Bucket=self.store.config.bucket, Key=self.key)


class S3BlobStore(BlobStore):
    def __init__(self, config: S3Config, tmp_root: Path, namespace: str = "") -> None:
        """`namespace`: a folder under the config's prefix (Xet keeps xorbs, shards and records apart)."""
        self.config = config
        self.tmp_root = tmp_root
        self.base = config.prefix + (namespace.strip("/") + "/" if namespace else "")
        tmp_root.mkdir(parents=True, exist_ok=True)
        self.client = _client(config)
        self.transfer = TransferConfig(multipart_threshold=config.multipart_threshold,
                                       multipart_chunksize=config.multipart_chunk_size, use_threads=True,
                                       max_concurrency=4)

    # ---- names -------------------------------------------------------------------------------
    def _key(self, oid: str) -> str:
        if not OID_RE.match(oid):
            raise ValueError(f"invalid oid {oid!r}")
        return f"{self.base}{oid[:2]}/{oid[2:4]}/{oid}"

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=self.config.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if _not_found(exc):
                return None
            raise _unavailable(exc) from None
        except BotoCoreError as exc:
            raise _unavailable(exc) from None

    # ---- reading -----------------------------------------------------------------------------
    def exists(self, oid: str) -> bool:
        return self._head(self._key(oid)) is not None

    def size(self, oid: str) -> int | None:
        head = self._head(self._key(oid))
        return None if head is None else int(head["ContentLength"])

    def local_path(self, oid: str) -> Path | None:
        return None  # no local files: readers stream by ranges (stored_object)

    def open(self, oid: str):  # type: ignore[no-untyped-def]
        try:
            return self.client.get_object(Bucket=self.config.bucket, Key=self._key(oid))["Body"]
        except ClientError as exc:
            if _not_found(exc):
                raise FileNotFoundError(oid) from None
            raise _unavailable(exc) from None

    def read_range(self, key: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        try:
            body = self.client.get_object(Bucket=self.config.bucket, Key=self._key(key),
                                          Range=f"bytes={start}-{end - 1}")["Body"]
        except ClientError as exc:
            if _not_found(exc):
                raise FileNotFoundError(key) from None
            if str(exc.response.get("Error", {}).get("Code")) == "InvalidRange":
                raise ValueError(f"stored object {key} is shorter than {end} bytes") from None
            raise _unavailable(exc) from None
        with body:
            data = body.read()
        if len(data) != end - start:
            raise ValueError(f"stored object {key} is shorter than {end} bytes")
        return data

    def iter_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """One ranged GET, streamed."""
        if end <= start:
            return
        body = self.client.get_object(Bucket=self.config.bucket, Key=self._key(key),
                                      Range=f"bytes={start}-{end - 1}")["Body"]
        with body:
            yield from body.iter_chunks(COPY_CHUNK)

    def presigned_url(self, oid: str, ttl_seconds: int, content_disposition: str | None = None) -> str:
        """A GET URL of the object valid `ttl_seconds`; the store answers it `Cache-Control: private, no-store`."""
        params: dict[str, Any] = {"Bucket": self.config.bucket, "Key": self._key(oid),
                                  "ResponseCacheControl": "private, no-store"}
        if content_disposition:
            params["ResponseContentDisposition"] = content_disposition
        return str(self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=ttl_seconds))

    def stored_keys(self) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.config.bucket, Prefix=self.base):
            for item in page.get("Contents", []):
                rest = item["Key"][len(self.base):]
                parts = rest.split("/")
                if len(parts) == 3 and OID_RE.match(parts[2]) and parts[2].startswith(parts[0] + parts[1]):
                    yield parts[2]

    # ---- writing -----------------------------------------------------------------------------
    def _install(self, staged: Path, key: str, replace: bool) -> None:
        """Upload a verified staging file (see LocalBlobStore._install for `replace`), then check what
        the server stored against it. The staging file is removed either way."""
        try:
            dest = self._key(key)
            if not replace and self._head(dest) is not None:
                # Kept, as on disk; a fresh LastModified tells garbage collection it was just uploaded.
                self._touch(dest)
                return
            size = staged.stat().st_size
            digest, composite = _digests(staged, self._part_size(size))
            extra = {**self.config.encryption_args(), "Metadata": {"sha256": digest.hex()},
                     "ChecksumAlgorithm": "SHA256"}
            try:
                self.client.upload_file(str(staged), self.config.bucket, dest, ExtraArgs=extra, Config=self.transfer)
            except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
                # A retried request can fail after its first attempt succeeded (a slow multipart
                # completion): what is stored decides, verified like any upload.
                if self._head(dest) is None:
                    raise _unavailable(exc) from None
            self._verify(dest, size, digest, composite)
        finally:
            staged.unlink(missing_ok=True)

    def _part_size(self, size: int) -> int | None:
        """The part size s3transfer uses for an object of `size` bytes; None: a single PUT."""
        if size < self.config.multipart_threshold:
            return None
        chunk = self.config.multipart_chunk_size
        if math.ceil(size / chunk) > MAX_PARTS:  # s3transfer doubles the part size until it fits
            while math.ceil(size / chunk) > MAX_PARTS:
                chunk *= 2
        return chunk

    def _verify(self, dest: str, size: int, digest: bytes, composite: str | None) -> None:
        head = self._head(dest)
        problem = None
        if head is None:
            problem = "the object is missing after its upload"
        elif int(head["ContentLength"]) != size:
            problem = f"{head['ContentLength']} bytes stored, {size} sent"
        elif head.get("Metadata", {}).get("sha256") != digest.hex():
            problem = "the stored sha256 record differs from the bytes sent"
        else:
            reported = head.get("ChecksumSHA256")
            # A multipart object's checksum is the composite, with "-<parts>" (S3) or without (some servers).
            expected = {_b64(digest)} | ({composite, composite.split("-")[0]} if composite else set())
            if reported and reported not in expected:
                problem = f"the server's SHA-256 checksum {reported} is not the one of the bytes sent"
            elif not reported:
                # A server that keeps no checksum: read the object back and hash it.
                h = hashlib.sha256()
                for block in self.iter_range(dest[dest.rindex("/") + 1:], 0, size):
                    h.update(block)
                if h.digest() != digest:
                    problem = f"the stored bytes hash to {h.hexdigest()}, not to the bytes sent"
        if problem is not None:
            self.client.delete_object(Bucket=self.config.bucket, Key=dest)
            raise BlobMismatch(f"object storage write failed verification: {problem}")

    def _touch(self, dest: str) -> None:
        head = self._head(dest) or {}
        self.client.copy_object(Bucket=self.config.bucket, Key=dest, CopySource={"Bucket": self.config.bucket,
                                "Key": dest}, MetadataDirective="REPLACE", Metadata=head.get("Metadata", {}),
                                **self.config.encryption_args())

    def put_verified(self, key: str, data: bytes | bytearray) -> bool:
        dest = self._key(key)
        if self._head(dest) is not None:
            return False
        digest = hashlib.sha256(data).digest()
        try:
            self.client.put_object(Bucket=self.config.bucket, Key=dest, Body=bytes(data), ChecksumAlgorithm="SHA256",
                                   Metadata={"sha256": digest.hex()}, **self.config.encryption_args())
        except (ClientError, BotoCoreError) as exc:
            if self._head(dest) is None:
                raise _unavailable(exc) from None
        self._verify(dest, len(data), digest, None)
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.config.bucket, Key=self._key(key))

    # ---- garbage collection ----------------------------------------------------------------
    def _copy(self, src: str, dest: str) -> None:
        self.client.copy({"Bucket": self.config.bucket, "Key": src}, self.config.bucket, dest,
                         ExtraArgs={**self.config.encryption_args(), "MetadataDirective": "COPY"},
                         Config=self.transfer)

    def trash(self, oid: str) -> S3Trashed | None:
        src = self._key(oid)
        head = self._head(src)
        if head is None:
            return None
        trash = f"{self.base}.trash/{oid}.{os.getpid()}.{threading.get_ident()}"
        self._copy(src, trash)
        self.client.delete_object(Bucket=self.config.bucket, Key=src)
        modified: datetime = head["LastModified"]
        return S3Trashed(self, trash, modified.timestamp())

    def restore(self, oid: str, trash: Trashed) -> None:
        assert isinstance(trash, S3Trashed)
        dest = self._key(oid)
        if self._head(dest) is None:  # never over a newer copy
            self._copy(trash.key, dest)
        trash.discard()


def _digests(path: Path, part_size: int | None) -> tuple[bytes, str | None]:
    """The file's SHA-256, and the composite checksum S3 reports for it uploaded in parts of
    `part_size` (the SHA-256 of the parts' SHA-256s, then "-<parts>")."""
    whole = hashlib.sha256()
    parts: list[bytes] = []
    with path.open("rb") as fh:
        while True:
            part = hashlib.sha256()
            left = part_size or -1
            got = 0
            while left != 0:
                block = fh.read(COPY_CHUNK if left < 0 else min(COPY_CHUNK, left))
                if not block:
                    break
                whole.update(block)
                part.update(block)
                got += len(block)
                left = left - len(block) if left > 0 else left
            if got:
                parts.append(part.digest())
            if not got or part_size is None or left != 0:
                break
    if part_size is None:
        return whole.digest(), None
    return whole.digest(), f"{_b64(hashlib.sha256(b''.join(parts)).digest())}-{len(parts)}"


_clients: dict[S3Config, Any] = {}
_clients_lock = threading.Lock()


def _client(config: S3Config) -> Any:
    """One client per configuration and process (boto3 clients are thread-safe; sessions are not)."""
    with _clients_lock:
        client = _clients.get(config)
        if client is None:
            session = boto3.session.Session(aws_access_key_id=config.access_key_id,
                                            aws_secret_access_key=config.secret_access_key,
                                            aws_session_token=config.session_token,
                                            region_name=config.region_name)
            client = session.client("s3", endpoint_url=config.endpoint_url, config=Config(
                retries={"total_max_attempts": config.max_attempts, "mode": "standard"},
                s3={"addressing_style": config.addressing_style}, signature_version="s3v4",
                connect_timeout=config.connect_timeout, read_timeout=config.read_timeout,
                max_pool_connections=32))
            _clients[config] = client
        return client
