"""S3Config: where an S3-compatible store is and how to talk to it. Apart from the store itself
(bastion.storage.s3) so that reading the region configuration does not import boto3."""

from __future__ import annotations

from dataclasses import dataclass, field

MiB = 1024 * 1024
MAX_PARTS = 10_000  # S3's limit on the parts of one multipart upload
SSE_MODES = ("AES256", "aws:kms", "aws:kms:dsse")


@dataclass(frozen=True)
class S3Config:
    """One bucket (and key prefix) of an S3-compatible service."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region_name: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    # Server-side encryption: "AES256" (SSE-S3), "aws:kms" or "aws:kms:dsse" (with sse_kms_key_id).
    sse: str | None = None
    sse_kms_key_id: str | None = None
    addressing_style: str = "auto"  # "path" for most self-hosted S3 servers (MinIO, Ceph, moto)
    multipart_threshold: int = 64 * MiB
    multipart_chunk_size: int = 64 * MiB
    max_attempts: int = 8  # per request, with exponential backoff between attempts
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def __post_init__(self) -> None:
        if not self.bucket:
            raise ValueError("an S3 store needs a bucket")
        if self.sse is not None and self.sse not in SSE_MODES:
            raise ValueError(f"sse must be one of {', '.join(SSE_MODES)}, not {self.sse!r}")
        if self.sse_kms_key_id and not (self.sse or "").startswith("aws:kms"):
            raise ValueError("sse_kms_key_id needs sse 'aws:kms' or 'aws:kms:dsse'")
        if self.addressing_style not in ("auto", "path", "virtual"):
            raise ValueError("addressing_style must be auto, path or virtual")
        if self.multipart_chunk_size < 5 * MiB:
            raise ValueError("multipart_chunk_size must be at least 5 MiB (S3's smallest part)")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.prefix and not self.prefix.endswith("/"):
            object.__setattr__(self, "prefix", self.prefix + "/")

    def encryption_args(self) -> dict[str, str]:
        args: dict[str, str] = {}
        if self.sse:
            args["ServerSideEncryption"] = self.sse
        if self.sse_kms_key_id:
            args["SSEKMSKeyId"] = self.sse_kms_key_id
        return args
