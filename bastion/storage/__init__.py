"""Blob stores: verified content by key (sha256 for LFS objects), on local disk or S3-compatible storage."""

from bastion.storage.blobstore import BlobMismatch, BlobStore, LocalBlobStore, StagedBlob, StoredBlobObject, Trashed

__all__ = ["BlobMismatch", "BlobStore", "LocalBlobStore", "StagedBlob", "StoredBlobObject", "Trashed"]
