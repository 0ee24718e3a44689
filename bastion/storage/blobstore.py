"""BlobStore: put verified content by key (sha256 for LFS objects; a xorb's hash for Xet), read it back,
stream it. The store never lies: content is verified before it is stored under its key, and an
sha256-verified upload replaces whatever was stored under that key (`bastion admin fsck` re-checks).

Writes go to a staging file, are hashed while they arrive and are moved into place only
after their sha256 and size match what was promised, so a reader never sees a partial blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

OID_RE = re.compile(r"^[0-9a-f]{64}\Z")
COPY_CHUNK = 1024 * 1024


class BlobMismatch(ValueError):
    """Received content does not match the announced sha256 or size."""


@dataclass
class StagedBlob:
    """A staging file being written; `commit()` verifies and moves it into the store."""

    store: BlobStore
    path: Path
    fd: int
    hasher: hashlib._Hash | None
    size: int = 0

    def write(self, data: bytes | bytearray) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        if self.hasher is not None:
            self.hasher.update(data)
        self.size += len(data)

    def pwrite(self, data: bytes, offset: int) -> None:
        """Positional write (multipart parts); the hash is computed at commit time."""
        self.hasher = None
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view, offset = view[n:], offset + n

    def commit(self, oid: str, size: int) -> None:
        try:
            actual_size = os.fstat(self.fd).st_size
            if actual_size != size:
                raise BlobMismatch(f"size mismatch: expected {size} bytes, received {actual_size}")
            digest = self.hasher.hexdigest() if self.hasher is not None else _hash_fd(self.fd)
            if digest != oid:
                raise BlobMismatch(f"sha256 mismatch: expected {oid}, received {digest}")
        except BaseException:
            self.abort()
            raise
        # The sha256 determines every byte: these replace a stored copy rather than trust it.
        self.commit_verified(oid, replace=True)

    def commit_verified(self, key: str, replace: bool = False) -> None:
        """Store under `key` content verified against it (commit(), or the caller's own rule such as a
        xorb's Merkle hash): made durable, then moved into place. `replace`: over an existing object
        (only for keys that determine every byte); otherwise an existing object is kept."""
        try:
            os.fsync(self.fd)
        except BaseException:
            self.abort()
            raise
        os.close(self.fd)
        self.fd = -1
        self.store._install(self.path, key, replace)

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.path.unlink(missing_ok=True)


def _hash_fd(fd: int) -> str:
    h = hashlib.sha256()
    offset = 0
    buf = bytearray(8 * COPY_CHUNK)
    with open(os.dup(fd), "rb", buffering=0) as fh:
        fh.seek(0)
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            h.update(memoryview(buf)[:n])
            offset += n
    return h.hexdigest()


class Trashed(ABC):
    """An object garbage collection moved out of the readable namespace (BlobStore.trash)."""

    @property
    @abstractmethod
    def mtime(self) -> float:
        """When the object was last stored or re-uploaded (seconds since the epoch)."""

    @abstractmethod
    def discard(self) -> None:
        """Delete it for good."""


class LocalTrashed(Trashed):
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def mtime(self) -> float:
        return os.stat(self.path).st_mtime

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class StoredBlobObject:
    """An object of a store without local files, read by ranges (bastion.lfs.content's StoredObject)."""

    def __init__(self, store: BlobStore, key: str, size: int, region: str | None = None) -> None:
        self.store, self.key, self.size, self.region = store, key, size, region

    def iter_bytes(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        end = self.size if end is None else min(end, self.size)
        yield from self.store.iter_range(self.key, start, end)


class BlobStore(ABC):
    """Where verified content lives. Writes are staged in `tmp_root` (a local folder of the store's
    region), verified there, then installed by the backend (`_install`)."""

    tmp_root: Path

    @abstractmethod
    def exists(self, oid: str) -> bool: ...

    @abstractmethod
    def size(self, oid: str) -> int | None: ...

    @abstractmethod
    def local_path(self, oid: str) -> Path | None:
        """A filesystem path for zero-copy serving, when the store has one."""

    def stored_object(self, oid: str) -> StoredBlobObject | None:
        """The object read by ranges (stores without local files), None when it is not stored."""
        size = self.size(oid)
        return None if size is None else StoredBlobObject(self, oid, size)

    @abstractmethod
    def open(self, oid: str): ...  # type: ignore[no-untyped-def]

    @abstractmethod
    def _install(self, staged: Path, key: str, replace: bool) -> None:
        """Move a verified, fsynced staging file into the store under `key` (see LocalBlobStore)."""

    @abstractmethod
    def put_verified(self, key: str, data: bytes | bytearray) -> bool:
        """Store content the caller verified against `key` by its own rule; False if already stored."""

    @abstractmethod
    def stored_keys(self) -> Iterator[str]:
        """Every key stored (fsck walks them); objects moved aside by garbage collection excluded."""

    @abstractmethod
    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of a stored object; ValueError if it is shorter."""

    def iter_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) of a stored object in blocks."""
        for offset in range(start, end, COPY_CHUNK):
            yield self.read_range(key, offset, min(end, offset + COPY_CHUNK))

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object (missing is fine): small derived records, never user content under GC."""

    @abstractmethod
    def trash(self, oid: str) -> Trashed | None:
        """Move the object out of the readable namespace (garbage collection); None if not stored."""

    @abstractmethod
    def restore(self, oid: str, trash: Trashed) -> None:
        """Undo trash(): the object was uploaded or registered again meanwhile."""

    # ---- staging: the same for every backend ---------------------------------------------
    def stage(self) -> StagedBlob:
        self.tmp_root.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.tmp_root, prefix="blob-")
        return StagedBlob(self, Path(name), fd, hashlib.sha256())

    def staged_at(self, path: Path) -> StagedBlob:
        """Re-open a staging file kept across requests (multipart uploads)."""
        fd = os.open(path, os.O_RDWR)
        return StagedBlob(self, path, fd, None)

    def put_bytes(self, data: bytes) -> str:
        """Store small content whose oid is computed here (tests, internal blobs)."""
        oid = hashlib.sha256(data).hexdigest()
        staged = self.stage()
        staged.write(data)
        staged.commit(oid, len(data))
        return oid

    async def put_stream(self, chunks: AsyncIterable[bytes], oid: str, size: int) -> None:
        staged = self.stage()
        try:
            async for chunk in chunks:
                staged.write(chunk)
                if staged.size > size:
                    raise BlobMismatch(f"size mismatch: more than the announced {size} bytes")
        except BaseException:
            staged.abort()
            raise
        # Installing may upload to object storage: not on the event loop.
        await asyncio.to_thread(staged.commit, oid, size)


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path, tmp_root: Path) -> None:
        self.root = root
        self.tmp_root = tmp_root
        root.mkdir(parents=True, exist_ok=True)
        tmp_root.mkdir(parents=True, exist_ok=True)

    def _path(self, oid: str) -> Path:
        if not OID_RE.match(oid):
            raise ValueError(f"invalid oid {oid!r}")
        return self.root / oid[:2] / oid[2:4] / oid

    def exists(self, oid: str) -> bool:
        return self._path(oid).is_file()

    def size(self, oid: str) -> int | None:
        try:
            return self._path(oid).stat().st_size
        except FileNotFoundError:
            return None

    def local_path(self, oid: str) -> Path | None:
        path = self._path(oid)
        return path if path.is_file() else None

    def open(self, oid: str):  # type: ignore[no-untyped-def]
        return self._path(oid).open("rb")

    def _install(self, staged: Path, oid: str, replace: bool) -> None:
        """Move verified content into place. With `replace` (an sha256 key, which determines every byte)
        an object already stored is replaced, never trusted: a copy damaged on disk (or by a bug) must not
        outlive a genuine upload; readers holding the old file keep reading it. Without it (a key such
        as a xorb hash, whose serialization may differ between uploads while the database describes the
        stored one) the stored object is kept."""
        dest = self._path(oid)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not replace:
            try:
                # Its mtime records this upload, so garbage collection moving it aside at this moment
                # puts it back.
                os.utime(dest)
            except FileNotFoundError:
                pass  # not stored (or just moved aside by garbage collection): install ours
            else:
                staged.unlink(missing_ok=True)
                return
        os.chmod(staged, 0o444)
        os.replace(staged, dest)  # a fresh mtime: garbage collection moving it aside now puts it back

    def trash(self, oid: str) -> LocalTrashed | None:
        trash_dir = self.root / ".trash"  # same filesystem as the object: the move is a rename
        trash_dir.mkdir(parents=True, exist_ok=True)
        trash = trash_dir / f"{oid}.{os.getpid()}"
        try:
            os.replace(self._path(oid), trash)
        except FileNotFoundError:
            return None
        return LocalTrashed(trash)

    def restore(self, oid: str, trash: Trashed) -> None:
        """Put a trashed object back, unless an upload stored a freshly verified copy meanwhile."""
        assert isinstance(trash, LocalTrashed)
        dest = self._path(oid)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.link(trash.path, dest)  # never over a newer copy
        trash.discard()

    def put_verified(self, key: str, data: bytes | bytearray) -> bool:
        if self.exists(key):
            return False
        staged = self.stage()
        staged.hasher = None
        try:
            staged.write(data)
        except BaseException:
            staged.abort()
            raise
        staged.commit_verified(key)
        return True

    def stored_keys(self) -> Iterator[str]:
        for first in sorted(self.root.glob("[0-9a-f][0-9a-f]")):
            for second in sorted(first.glob("[0-9a-f][0-9a-f]")):
                for path in sorted(second.iterdir()):
                    if OID_RE.match(path.name) and path.name.startswith(first.name + second.name):
                        yield path.name

    def read_range(self, key: str, start: int, end: int) -> bytes:
        fd = os.open(self._path(key), os.O_RDONLY)
        try:
            pieces, held = [], 0
            while held < end - start:  # one pread for a regular file, unless it is shorter
                piece = os.pread(fd, end - start - held, start + held)
                if not piece:
                    raise ValueError(f"stored object {key} is shorter than {end} bytes")
                pieces.append(piece)
                held += len(piece)
            return pieces[0] if len(pieces) == 1 else b"".join(pieces)
        finally:
            os.close(fd)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def iter_file(path: Path, start: int = 0, end: int | None = None) -> Iterable[bytes]:
    with path.open("rb") as fh:
        fh.seek(start)
        remaining = None if end is None else end - start
        while remaining is None or remaining > 0:
            chunk = fh.read(COPY_CHUNK if remaining is None else min(COPY_CHUNK, remaining))
            if not chunk:
                return
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk
