"""Blob stores: content-addressed (sha256) storage for LFS objects; local disk now, S3 later."""

from bastion.storage.blobstore import BlobMismatch, BlobStore, LocalBlobStore, StagedBlob

__all__ = ["BlobMismatch", "BlobStore", "LocalBlobStore", "StagedBlob"]
