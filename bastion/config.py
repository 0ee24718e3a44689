"""Settings: environment variables BASTION_* and command-line flags.

One `Settings` object is built at start-up and handed to the app factory and the services.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


def host_name(host: str, *, strict: bool = False) -> str:
    """A host name as compared by the Host check: lower case, no trailing dot, IPv6 without brackets.
    `strict`: refuse what is no bare host name (a scheme, port, path or wildcard)."""
    name = host.strip().lower().rstrip(".")
    bracketed = name.startswith("[") and name.endswith("]")
    name = name[1:-1] if bracketed else name
    if strict:
        try:
            ipv6 = ipaddress.ip_address(name).version == 6
        except ValueError:
            ipv6 = False
        if not name or any(c in name for c in "/@?#*[] ") or (":" in name and not ipv6):
            raise ValueError(f"BASTION_ALLOWED_HOSTS takes host names (no scheme, port, path or wildcard), "
                             f"not {host!r}")
    return name


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BASTION_", extra="ignore")

    data_dir: Path = Field(default=Path("./data"))
    database_url: str | None = None
    # Public base URL (scheme://host[:port][/prefix]). Links in e-mail are built only from it (without it,
    # mail that needs a link is refused); absolute URLs in API answers use it too, else each request's Host.
    public_url: str | None = None
    # Host names requests may name besides the public URL's (and the Xet CAS URL's) host; once either
    # is set, a request for any other host gets 400 (bastion.api.middleware.AllowedHostsMiddleware).
    allowed_hosts: list[str] = Field(default_factory=list)

    # Upload policy: the server decides regular vs LFS (preupload).
    lfs_threshold: int = 10 * MiB
    max_regular_file_size: int = 10 * MiB
    multipart_threshold: int = 512 * MiB
    multipart_chunk_size: int = 128 * MiB
    max_commit_body: int = 64 * MiB
    max_commit_operations: int = 25_000
    # What one commit's tree may hold (commit API and git push): entries directly in one folder, and
    # entries in the whole tree (every level). A commit that grows a tree past either is refused.
    max_tree_entries: int = Field(default=10_000, ge=1)
    max_total_tree_entries: int = Field(default=1_000_000, ge=1)
    max_lfs_object_size: int = 500 * 1024 * MiB
    upload_url_ttl_seconds: int = 3600
    # Downloads of LFS objects at least this large, held in an S3 store, answered with a redirect to a
    # short-lived pre-signed URL of the region's store (authorization decided first; never cached by a
    # shared cache). Off by default: every byte then flows through Bastion.
    presigned_downloads: bool = False
    presigned_download_min_bytes: int = Field(default=100 * MiB, ge=0)
    presigned_url_ttl_seconds: int = Field(default=300, ge=1, le=7 * 24 * 3600)

    # Xet CAS. The CAS URL handed to clients defaults to this server's own base URL (CAS mounted in
    # the app); set it to run the CAS routes behind another host name or on separate replicas.
    xet_cas_url: str | None = None
    xet_token_ttl_seconds: int = 30 * 60
    xet_fetch_url_ttl_seconds: int = 15 * 60
    xet_max_xorb_bytes: int = 64 * MiB  # xorb.md: the serialized-size limit a CAS enforces
    xet_max_shard_bytes: int = 64 * MiB  # upload-protocol.md: larger shards must be split
    xet_gc_grace_hours: float = 24.0  # unreferenced xorbs younger than this may belong to an upload in flight

    # Scanning. clamd: "unix:///path/clamd.ctl" or "tcp://host:port"; unset: `bastion serve` starts and
    # supervises a clamd of its own (bastion.scanning.clamd) with its socket and config in the data dir.
    clamd_address: str | None = None
    clamd_database_dir: Path | None = None  # the embedded clamd's signatures (freshclam writes them); default data dir
    # freshclam for the embedded clamd: hours between updates (0: never), and an optional private mirror
    # (freshclam's PrivateMirror, e.g. "http://mirror.internal/clamav"; unset: ClamAV's public mirrors).
    freshclam_interval_hours: float = Field(default=4.0, ge=0)
    freshclam_mirror: str | None = None
    scanners: list[str] = Field(default_factory=lambda: ["av", "pickle", "format", "secrets"])
    # Queue transport: unset = SQLite file in the data dir (embedded); "redis://…" for scale-out.
    queue_url: str | None = None
    queue_name: str = "bastion"  # instances sharing one Redis keep apart by name
    embedded_workers: bool = True  # run scan workers inside `bastion serve`
    scan_workers: int = 2
    scan_lease_seconds: int = 600  # a job not finished by then is handed to another worker
    scan_timeout_seconds: int = 300  # per scanner and file; then the verdict is `error`
    # Scanners that parse the content (pickle, secrets) run each scan in a process of its own under
    # these OS limits (RLIMIT_DATA, RLIMIT_CPU); over one, that scan is killed and its verdict is `error`.
    scan_memory_limit_mb: int = Field(default=2048, ge=64)
    scan_cpu_seconds: int = Field(default=300, ge=1)
    scan_max_attempts: int = 3
    # Push protection reads every file whole, any size (LFS included). Up to this size, only the lines
    # a commit adds count (a diff); above it the file is streamed and a secret counts when the old
    # version of the file did not hold it.
    push_protection_diff_max_bytes: int = 32 * MiB
    scan_inline_max_bytes: int = 64 * MiB  # "block unsafe files" scans up to this size before the ref moves
    # Third-party secret verification, off unless configured: provider → base URL of its API (e.g.
    # {"github": "https://api.github.com"}). Air-gapped installs leave it empty; Bastion's own
    # tokens are always verified locally.
    secret_verifiers: dict[str, str] = Field(default_factory=dict)

    # Test and development switch: a request that did not pass exactly one authz check fails.
    strict_authz: bool = False
    trusted_proxies: list[str] = Field(default_factory=list)
    # Report the time spent in authentication and authorization in a Server-Timing header (bastion.timing).
    server_timing: bool = False
    # Repeated failures (failed authentications per source IP and reason, denied token uses per token
    # and reason) are audited at most once per this many seconds each, with a count (bastion.audit.aggregate).
    audit_repeat_window_seconds: int = Field(default=60, ge=1)
    # The audit chain's HMAC keys (bastion.audit.chain): a file the database does not hold, created 0600 at
    # first start. Default DATA_DIR/audit_key; point it at a mount only Bastion's processes read.
    audit_key_file: Path | None = None
    # Signed checkpoints of the chain (bastion.audit.checkpoints): one once this many events were written
    # since the last, and one at least every this many seconds while events keep coming.
    audit_checkpoint_every: int = Field(default=1000, ge=1)
    audit_checkpoint_interval_seconds: int = Field(default=3600, ge=1)
    # Retention (bastion.audit.retention): days events are kept, 0 = forever. Organizations may choose one of
    # AUDIT_RETENTION_CHOICES up to this (when set). Removed events are first archived (gzip NDJSON) here.
    audit_retention_days: int = Field(default=0, ge=0)
    audit_archive_dir: Path | None = None  # default DATA_DIR/audit-archive
    # Streaming (bastion.audit.delivery): delivery attempts before an event is dead-lettered; extra CA
    # certificates (PEM file) trusted for HTTPS webhooks and syslog over TLS besides the system's.
    audit_delivery_max_attempts: int = Field(default=8, ge=1)
    audit_sink_ca_file: Path | None = None
    # Reading the audit logs (bastion.audit.query, bastion.auditlog): a MaxMind-format (.mmdb) GeoIP database
    # whose city/country names the `location` of each event (unset: no locations), and whether addresses
    # are shown anonymised (IPv4 /24, IPv6 /48) in the API, the pages, exports and the CLI.
    geoip_database: Path | None = None
    audit_anonymize_ips: bool = False

    # Accounts and web sessions. Sign-up: "open" (anyone), "invite" (a signed invite link), "admins" (CLI only).
    signup: Literal["open", "invite", "admins"] = "admins"
    smtp_url: str | None = None  # smtp://[user:pass@]host:port, smtp+starttls://…, smtps://…; unset: mail is logged
    mail_from: str = "Bastion <bastion@localhost>"
    session_idle_minutes: int = 12 * 60
    session_max_age_hours: int = 14 * 24  # below the Hub's 30 days between second-factor prompts
    sudo_minutes: int = 15  # how long a re-authentication allows changing second factors
    password_min_length: int = 10
    # Days a deleted account's own repositories are kept (private, under its pseudonym) before they are
    # deleted for good by the worker's sweeper or `bastion admin purge-deleted-accounts`; 0: at the next sweep.
    account_deletion_grace_days: int = Field(default=30, ge=0, le=3650)

    @field_validator("public_url", "xet_cas_url")
    @classmethod
    def _absolute_http_url(cls, value: str | None) -> str | None:
        if not value:
            return None  # an empty variable is an unset one
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"{value!r} is not an absolute http(s) URL (scheme://host[:port][/prefix])")
        return value.rstrip("/")

    @field_validator("geoip_database")
    @classmethod
    def _readable_geoip(cls, value: Path | None) -> Path | None:
        if value is None or str(value) == "":
            return None
        import maxminddb

        path = value.expanduser().resolve()
        try:
            maxminddb.open_database(str(path)).close()
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise ValueError(f"BASTION_GEOIP_DATABASE {str(path)!r} is not a readable MaxMind database: "
                             f"{exc}") from None
        return path

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: list[str]) -> list[str]:
        return [host_name(h, strict=True) for h in value]

    @property
    def served_hosts(self) -> frozenset[str]:
        """The host names clients may address this instance by; empty: none configured (no Host check)."""
        urls = [u for u in (self.public_url, self.xet_cas_url) if u]
        return frozenset([*(host_name(urlsplit(u).hostname or "") for u in urls), *self.allowed_hosts]) - {""}

    @cached_property
    def resolved_data_dir(self) -> Path:
        path = self.data_dir.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'bastion.sqlite3'}"

    @property
    def repos_dir(self) -> Path:
        return self.resolved_data_dir / "repos"

    @property
    def lfs_dir(self) -> Path:
        return self.resolved_data_dir / "lfs"

    @property
    def xet_dir(self) -> Path:
        return self.resolved_data_dir / "xet"

    @property
    def embedded_clamd(self) -> bool:
        """No clamd configured: `bastion serve` runs its own (an explicit address always wins)."""
        return not self.clamd_address

    @property
    def clamav_dir(self) -> Path:
        """The embedded clamd's folder: clamd.conf, freshclam.conf, the socket, logs, status.json. Not created
        here: `bastion scan` names the socket without making a data dir where it runs."""
        return self.data_dir.expanduser().resolve() / "clamav"

    @property
    def resolved_clamd_database_dir(self) -> Path:
        return (self.clamd_database_dir.expanduser().resolve() if self.clamd_database_dir
                else self.clamav_dir / "db")

    @property
    def resolved_clamd_address(self) -> str:
        if self.clamd_address:
            return self.clamd_address
        return f"unix://{self.clamav_dir / 'clamd.sock'}"

    @property
    def resolved_audit_key_file(self) -> Path:
        return (self.audit_key_file.expanduser().resolve() if self.audit_key_file
                else self.resolved_data_dir / "audit_key")

    @property
    def resolved_audit_archive_dir(self) -> Path:
        return (self.audit_archive_dir.expanduser().resolve() if self.audit_archive_dir
                else self.resolved_data_dir / "audit-archive")

    @property
    def tmp_dir(self) -> Path:
        return self.resolved_data_dir / "tmp"

    @cached_property
    def secret_key(self) -> bytes:
        """The instance key for signed URLs and tokens, created once and kept in the data dir."""
        env = os.environ.get("BASTION_SECRET_KEY")
        if env:
            return env.encode()
        path = self.resolved_data_dir / "secret_key"
        try:
            return path.read_bytes().strip()
        except FileNotFoundError:
            pass
        key = secrets.token_hex(32).encode()
        # O_EXCL: two processes starting together agree on one key.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes().strip()
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        return key
