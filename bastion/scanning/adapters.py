"""The enabled scanners behind one interface, and one scanner run on one blob.

A blob is named by a BlobRef (what its verdicts are keyed by, where its bytes are read); a scanner
that parses hostile content runs in a scan process of its own (bastion.scanning.isolation).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextvars import ContextVar, copy_context
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pygit2
from sqlalchemy.orm import Session

from bastion.config import Settings
from bastion.hub import Hub
from bastion.lfs.content import ObjectNotLinked, StoredObject, as_file, locate
from bastion.scanning import clamd, leaks
from bastion.scanning.isolation import ProcessLimits, ScanAborted, run_isolated
from bastion.scanning.results import ScanResult, Verdict, worst
from bastion.scanning.scanners import model_formats, pickles
from bastion.scanning.scanners import secrets as secret_scanning
from bastion.scanning.scanners.malware import MalwareScanner
from bastion.scanning.scanners.pickles import SCANNER_VERSION as PICKLE_VERSION
from bastion.scanning.scanners.pickles import PickleScanner
from bastion.scanning.scanners.secrets import (
    BASTION_TOKEN_DETECTOR,
    CallableVerifier,
    SecretScanner,
    SecretScanReport,
    VerifierRegistry,
)
from bastion.scanning.scanners.secrets import SCANNER_VERSION as SECRETS_VERSION
from bastion.scanning.scanners.secrets import to_scan_result as to_secrets_result
from bastion.storage.gitstore import LFS_POINTER_MAX, LFS_POINTER_MIN, GitRepo, parse_lfs_pointer
from bastion.storage.regions import DEFAULT_REGION, region_of_key

ISSUE_VERDICTS = frozenset({Verdict.UNSAFE, Verdict.SUSPICIOUS, Verdict.CAUTION})


class Scanner(Protocol):
    name: str

    def version(self) -> str: ...

    def scan_path(self, path: Path) -> ScanResult: ...

    def scan_bytes(self, data: bytes, name: str = "") -> ScanResult: ...


@runtime_checkable
class IsolatedScanner(Scanner, Protocol):
    """A scanner that parses hostile content: the pipeline runs it in a process of its own under OS
    limits (bastion.scanning.isolation). The others (clamd, over a socket) run in a worker thread."""

    def scan_isolated(self, source: Path | bytes, name: str, limits: ProcessLimits) -> ScanResult: ...


# The spool folder of the scan running in this context: the staging folder of the region the scanned
# bytes live in (run_scanner sets it), so inflated members are written only in that region.
scan_spool: ContextVar[Path | None] = ContextVar("bastion_scan_spool", default=None)


def _spool(default: str | None) -> str | None:
    current = scan_spool.get()
    return str(current) if current is not None else default


class PickleScannerAdapter:
    name = "pickle"

    def __init__(self, spool_dir: Path | None = None) -> None:
        self._spool_dir = str(spool_dir) if spool_dir is not None else None

    @property
    def spool_dir(self) -> str | None:
        return _spool(self._spool_dir)

    @property
    def scanner(self) -> PickleScanner:
        return PickleScanner(spool_dir=self.spool_dir)

    def version(self) -> str:
        return PICKLE_VERSION

    def scan_path(self, path: Path) -> ScanResult:
        return self._stamped(self.scanner.scan_path(path))

    def scan_bytes(self, data: bytes, name: str = "") -> ScanResult:
        return self._stamped(self.scanner.scan_bytes(data, name))

    def scan_isolated(self, source: Path | bytes, name: str, limits: ProcessLimits) -> ScanResult:
        return self._stamped(run_isolated(pickles.scan_source, (source, name, self.spool_dir), limits))

    def _stamped(self, result: ScanResult) -> ScanResult:
        # Verdicts are keyed by the version this pipeline asked for, so reuse and rescans agree.
        result.scanner_version = self.version()
        return result


class FormatScannerAdapter:
    """The format scanners (safetensors, GGUF, ONNX, NumPy, ...: bastion.scanning.scanners.model_formats),
    one scanner to the pipeline: each file is judged by the one format it is, in a scan process."""

    name = "format"

    def __init__(self, spool_dir: Path | None = None) -> None:
        self._spool_dir = str(spool_dir) if spool_dir is not None else None

    @property
    def spool_dir(self) -> str | None:
        return _spool(self._spool_dir)

    def version(self) -> str:
        return model_formats.SCANNER_VERSION

    def scan_path(self, path: Path) -> ScanResult:
        return model_formats.scan_path(path, spool_dir=self.spool_dir)

    def scan_bytes(self, data: bytes, name: str = "") -> ScanResult:
        return model_formats.scan_source(data, name, self.spool_dir)

    def scan_isolated(self, source: Path | bytes, name: str, limits: ProcessLimits) -> ScanResult:
        return run_isolated(model_formats.scan_source, (source, name, self.spool_dir), limits)


SECRETS_MAX_BYTES = 256 * 1024 * 1024


class SecretsScannerAdapter:
    """Secrets: findings are owner-only notices; a live Bastion token is revoked on sight (the result names
    it in `leaked`: whoever records the verdict revokes it in the same transaction)."""

    name = "secrets"

    def __init__(self, hub: Hub | None) -> None:
        endpoints = hub.settings.secret_verifiers if hub is not None else {}
        registry = (VerifierRegistry.with_http(endpoints, providers=set(endpoints)) if endpoints
                    else VerifierRegistry())
        if hub is not None:
            registry.register(BASTION_TOKEN_DETECTOR, CallableVerifier(partial(leaks.is_live_token, hub)))
        self.hub = hub
        self.scanner = SecretScanner(verifiers=registry)

    def version(self) -> str:
        return SECRETS_VERSION

    def scan_bytes(self, data: bytes, name: str = "") -> ScanResult:
        return self._judge(self.scanner.scan_blob(data, name), name)

    def scan_path(self, path: Path) -> ScanResult:
        return self._judge(self.scanner.scan_file(path, path.name, SECRETS_MAX_BYTES), path.name)

    def scan_isolated(self, source: Path | bytes, name: str, limits: ProcessLimits) -> ScanResult:
        # The scan process reads the content; verification (a database lookup for Bastion's own
        # tokens, provider APIs) happens here, on its findings.
        report: SecretScanReport = run_isolated(secret_scanning.scan_source, (source, name, SECRETS_MAX_BYTES),
                                                limits)
        report.findings = self.scanner.verify(report.findings)
        return self._judge(report, name)

    def _judge(self, report: SecretScanReport, name: str) -> ScanResult:
        result = to_secrets_result(report.findings, report.skipped, binary=report.binary, partial=report.partial)
        result.leaked = [f.raw_secret for f in report.findings if f.detector == BASTION_TOKEN_DETECTOR and f.verified]
        if self.hub is not None:
            # A keyed fingerprint identifies the same secret across files and edits without storing it.
            key = self.hub.settings.secret_key
            for finding, detail in zip(report.findings, result.details.get("detail", []), strict=True):
                detail["fingerprint"] = hmac.new(key, finding.raw_secret.encode(), hashlib.sha256).hexdigest()[:40]
        result.scanner_version = self.version()
        return result


# Scanner verdicts shown to anyone who can read the repo. Secret findings are not: a notice that a
# file holds a secret (and where) is for the repo's owners only.
PUBLIC_SCANNERS = ("av", "pickle", "format")


def build_scanners(settings: Settings, only: Iterable[str] | None = None, hub: Hub | None = None,
                   ) -> dict[str, Scanner]:
    """The enabled scanners, by name. Unknown names in the settings are a configuration error."""
    wanted = list(only or settings.scanners)
    out: dict[str, Scanner] = {}
    for name in wanted:
        if name == "av":
            # Without BASTION_CLAMD_ADDRESS: the clamd `bastion serve` supervises, and its account of why
            # it cannot scan (no signatures yet, restarting) is the reason a scan is `unavailable`.
            explain = partial(clamd.unavailable_reason, settings) if settings.embedded_clamd else None
            out[name] = MalwareScanner(settings.resolved_clamd_address, settings.scan_timeout_seconds, explain)
        elif name == "pickle":
            # Large inflated members are spooled next to the server's other temporary files.
            out[name] = PickleScannerAdapter(settings.tmp_dir if hub is not None else None)
        elif name == "secrets":
            out[name] = SecretsScannerAdapter(hub)
        elif name == "format":
            out[name] = FormatScannerAdapter(settings.tmp_dir if hub is not None else None)
        else:
            raise ValueError(f"unknown scanner {name!r} (known: av, pickle, format, secrets)")
    return out


@dataclass(frozen=True)
class BlobRef:
    key: str
    kind: str  # lfs | git
    storage_key: str | None
    size: int


def blob_ref(hub: Hub, storage_key: str, git_oid: str, git: GitRepo | None = None) -> BlobRef:
    """What a blob's verdicts are keyed by and where its bytes are read. `git`: the repository, already
    open (a commit of many files opens it once). Only pointer-sized blobs are read."""
    repo = (git or hub.git(storage_key)).repo
    _kind, size = repo.odb.read_header(git_oid)
    ptr = parse_lfs_pointer(repo[git_oid].data) if LFS_POINTER_MIN <= size <= LFS_POINTER_MAX else None
    if ptr is not None:
        return BlobRef(ptr.oid, "lfs", None, ptr.size)
    return BlobRef(git_oid, "git", storage_key, size)


class ContentGone(Exception):
    """The bytes to scan went away with their repository (deleted after the commit queued them)."""


def read_bytes(hub: Hub, ref: BlobRef) -> bytes:
    try:
        return hub.git(ref.storage_key or "").repo[ref.key].data
    except (pygit2.GitError, KeyError, ValueError) as exc:
        raise ContentGone(str(exc)) from None


def scanners_of(hub: Hub) -> dict[str, Scanner]:
    cached = getattr(hub, "_scanners", None)
    if cached is None:
        cached = build_scanners(hub.settings, hub=hub)
        hub._scanners = cached  # type: ignore[attr-defined]
    return cached


def scan_limits(settings: Settings) -> ProcessLimits:
    return ProcessLimits(settings.scan_memory_limit_mb, settings.scan_cpu_seconds, settings.scan_timeout_seconds)


def locate_content(hub: Hub, ref: BlobRef, repo_id: int | None, session: Session) -> Path | StoredObject | None:
    """Where an LFS object's bytes are, as a file of repository `repo_id` (ANY_HOLDER: of whichever
    repositories hold it, when the one that queued the scan is gone): it is read only if that repository
    holds a link. None for a git blob (read from its repository). In the caller's transaction: a scan
    job's claim, or the commit of an inline scan."""
    if ref.kind != "lfs":
        return None
    try:
        found = locate(hub, repo_id, ref.key, session)
    except ObjectNotLinked:
        raise ContentGone(f"LFS object {ref.key} is not linked to the repository it is scanned for") from None
    if found is None:
        # Collected by storage GC (no ref reached it) after the commit queued it: like a git blob gone
        # with its repo, no verdict is stored, so the same bytes uploaded again are scanned afresh
        # instead of inheriting an error.
        raise ContentGone(f"LFS object {ref.key} is no longer stored")
    return found


def run_scanner(hub: Hub, scanner: Scanner, ref: BlobRef, found: Path | StoredObject | None, path: str = "",
                ) -> ScanResult:
    """One scanner on one blob: the LFS object `locate_content` found, or the git blob `ref` names. No
    transaction is held. A scanner that parses the content runs in a scan process of its own under the
    OS limits in the settings; over one, the verdict is `error` saying which."""
    isolated = isinstance(scanner, IsolatedScanner)
    limits = scan_limits(hub.settings)
    region = _region_of(hub, ref, found)
    spool = hub.staging_dir(region)
    spool.mkdir(parents=True, exist_ok=True)
    token = scan_spool.set(spool)
    try:
        return _run_scanner(hub, scanner, ref, found, path, isolated, limits, region)
    finally:
        scan_spool.reset(token)


def _region_of(hub: Hub, ref: BlobRef, found: Path | StoredObject | None) -> str:
    """The region the scanned bytes live in: its spool files are written there and nowhere else."""
    if ref.kind == "git" or found is None:
        return region_of_key(ref.storage_key or "")
    region = getattr(found, "region", None)
    if isinstance(region, str):
        return region
    if isinstance(found, Path):
        for name in hub.regions:
            if found.is_relative_to(hub.places(name).base):
                return name
    return DEFAULT_REGION


def _run_scanner(hub: Hub, scanner: Scanner, ref: BlobRef, found: Path | StoredObject | None, path: str,
                 isolated: bool, limits: ProcessLimits, region: str) -> ScanResult:
    def work() -> ScanResult:
        if found is not None:
            with as_file(hub, found, region) as local:  # a Xet-stored file is reconstructed for the scan
                if isinstance(scanner, IsolatedScanner):
                    # Named by its path in the repository, like a git blob, not by its storage name.
                    return scanner.scan_isolated(local, path or local.name, limits)
                return scanner.scan_path(local)
        if isinstance(scanner, IsolatedScanner):
            return scanner.scan_isolated(read_bytes(hub, ref), path, limits)
        return scanner.scan_bytes(read_bytes(hub, ref), path)

    if isolated:
        try:
            return work()  # the scan process has its own wall-clock limit
        except ScanAborted as exc:
            result = ScanResult(scanner.name, scanner.version(), Verdict.ERROR, exc.summary)
            result.retryable = exc.retryable
            return result
    pool = ThreadPoolExecutor(1, thread_name_prefix=f"scan-{scanner.name}")
    try:
        # The worker thread sees the caller's context (the audit context).
        return pool.submit(copy_context().run, work).result(timeout=hub.settings.scan_timeout_seconds)
    except FutureTimeout:
        return ScanResult(scanner.name, scanner.version(), Verdict.ERROR,
                          f"timed out after {hub.settings.scan_timeout_seconds}s")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def scan_file_offline(scanners: dict[str, Scanner], path: Path) -> dict[str, Any]:
    """`bastion scan`: every enabled scanner on one local file, no database."""
    scans: dict[str, Any] = {}
    verdicts = []
    for name, scanner in scanners.items():
        try:
            result = scanner.scan_path(path)
        except Exception as exc:  # never report a file we could not scan as safe
            result = ScanResult(name, scanner.version(), Verdict.ERROR, f"{type(exc).__name__}: {exc}")
        verdicts.append(result.verdict)
        scans[name] = {**result.details, "status": str(result.verdict), "version": result.scanner_version,
                       "summary": result.summary}
    return {"status": str(worst(verdicts)), "scans": scans}
