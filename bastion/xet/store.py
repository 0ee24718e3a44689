"""XorbStore: validated xorbs keyed by their Xet hash, and uploaded shards keyed by sha256.

Both live in blob stores, the interface LFS objects use (bastion.storage.BlobStore: written once
to a staging file, fsynced, then moved into place, so a reader never sees a partial object; an
object that exists is never rewritten), so another backend or region serves Xet as it serves LFS.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from bastion.storage import BlobStore, LocalBlobStore, Trashed


class XorbStore:
    def __init__(self, xorbs: BlobStore, shards: BlobStore, by_oid: BlobStore, files: BlobStore | None = None) -> None:
        self.xorbs = xorbs
        self.shards = shards
        # Xet file hash -> its segments (xorb ranges) as uploaded into this store's region: the database's
        # registration names the first upload's xorbs, which another region may not hold (deduplication
        # never crosses regions, and a client may pack the same file into other xorbs).
        self.files = files
        # LFS oid -> Xet file hash. A small record, not a table: tree listings ask while their route
        # holds a database transaction, and the answer is immutable content.
        self.by_oid = by_oid

    @classmethod
    def local(cls, root: Path, tmp_root: Path) -> XorbStore:
        return cls(LocalBlobStore(root / "xorbs", tmp_root), LocalBlobStore(root / "shards", tmp_root),
                   LocalBlobStore(root / "by-oid", tmp_root), LocalBlobStore(root / "files", tmp_root))

    def put_file_segments(self, file_hex: str, packed: bytes) -> None:
        if self.files is not None:
            self.files.put_verified(file_hex, packed)

    def file_segments(self, file_hex: str) -> bytes | None:
        if self.files is None:
            return None
        try:
            with self.files.open(file_hex) as fh:
                return fh.read() or None
        except FileNotFoundError:
            return None

    def xorb_path(self, xorb_hex: str) -> Path | None:
        """A local file for zero-copy range serving, when the store has one."""
        return self.xorbs.local_path(xorb_hex)

    def has_xorb(self, xorb_hex: str) -> bool:
        return self.xorbs.exists(xorb_hex)

    def put_xorb(self, xorb_hex: str, data: bytes | bytearray) -> bool:
        """Store a xorb the caller validated against its hash; False when it was already stored."""
        return self.xorbs.put_verified(xorb_hex, data)

    def put_shard(self, data: bytes | bytearray) -> str:
        key = hashlib.sha256(data).hexdigest()
        self.shards.put_verified(key, data)
        return key

    def index_file(self, oid: str, file_hash: str) -> None:
        """Remember that LFS object `oid` has the Xet reconstruction `file_hash`."""
        self.by_oid.put_verified(oid, file_hash.encode())

    def indexed_file(self, oid: str) -> str | None:
        try:
            with self.by_oid.open(oid) as fh:
                return fh.read().decode() or None
        except FileNotFoundError:
            return None

    def unindex_file(self, oid: str) -> None:
        self.by_oid.delete(oid)

    def read_xorb(self, xorb_hex: str, start: int, end: int) -> bytes:
        """Serialized bytes [start, end) of a stored xorb."""
        return self.xorbs.read_range(xorb_hex, start, end)

    def trash_xorb(self, xorb_hex: str) -> Trashed | None:
        """Move a xorb out of the readable namespace (GC step 1); None if it was not stored."""
        return self.xorbs.trash(xorb_hex)

    def restore_xorb(self, xorb_hex: str, trash: Trashed) -> None:
        self.xorbs.restore(xorb_hex, trash)
