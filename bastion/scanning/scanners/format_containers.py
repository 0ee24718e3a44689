"""The archives the format scanners look into: zip and tar (a .nemo is a tar), gzip/bz2/xz-compressed too.

A file that is no model format itself but an archive has its regular members walked; each member some
format sniffs or names (or that is an archive again) is copied to a temporary file and judged by the
format scanners as if it were a file of its own, named by its member path; its findings join the
archive's with locations `member/path: ...`. Members no format recognises are left to the pickle and
malware scanners. The walk keeps the pickle scanner's bounds (its ScanLimits, its zip reader and its
bounded decompression): members per archive, bytes inflated or extracted in all, the inflation ratio,
nesting depth and time. Over a bound the verdict is `error` or `suspicious`, never `safe`.

A member name that climbs out of the folder it is extracted to (absolute, or with `..`), or a tar link
pointing out of it, is unsafe: NeMo and other loaders extract archives before reading them.
"""

from __future__ import annotations

import mmap
import os
import posixpath
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from bastion.scanning.results import ScanResult, Verdict
from bastion.scanning.scanners.format_report import FormatReport
from bastion.scanning.scanners.pickles.formats import BZ2, GZIP, XZ, bounded_decompress, sniff_compression
from bastion.scanning.scanners.pickles.scanner import ScanLimits
from bastion.scanning.scanners.pickles.zipread import ZipFormatError, list_members, read_member

MAX_LISTED = 200  # members shown with their verdicts
_COPY_CHUNK = 1 << 20
_COMPRESSED_SUFFIXES = {".gz": "", ".tgz": ".tar", ".bz2": "", ".tbz2": ".tar", ".xz": "", ".txz": ".tar"}


@dataclass(frozen=True)
class Walk:
    """One scan's walk through nested archives: its bounds, where members are spooled, how deep it is,
    and the bytes extracted so far (shared by every level through `spent`)."""

    limits: ScanLimits
    spool_dir: str | None
    deadline: float
    depth: int = 0
    spent: list[int] | None = None  # [bytes extracted or inflated so far]

    @classmethod
    def start(cls, limits: ScanLimits | None = None, spool_dir: str | None = None) -> Walk:
        limits = limits or ScanLimits()
        return cls(limits, spool_dir, time.monotonic() + limits.max_seconds, 0, [0])

    def deeper(self) -> Walk:
        return replace(self, depth=self.depth + 1)

    @property
    def remaining(self) -> int:
        return max(0, self.limits.max_decompressed_bytes - self.used)

    @property
    def used(self) -> int:
        return self.spent[0] if self.spent else 0

    def spend(self, n: int) -> None:
        if self.spent is not None:
            self.spent[0] += n


# What the format scanners are asked: does this member (first bytes, member path) interest you, and
# the verdict on a member spooled to a file.
Wants = Callable[[bytes, str], bool]
ScanMember = Callable[[Path, str, Walk], ScanResult]


def kind_of(head: bytes) -> str | None:
    """The archive or compression the first bytes show, or None."""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[257:262] == b"ustar":
        return "tar"
    kind = sniff_compression(head)
    return kind if kind in (GZIP, BZ2, XZ) else None


def scan_archive(path: Path, name: str, kind: str, walk: Walk, wants: Wants, scan_member: ScanMember,
                 version: str) -> ScanResult:
    """The verdict on an archive (`kind` from kind_of) and every member the format scanners read."""
    if kind in (GZIP, BZ2, XZ):
        return _compressed(path, name, kind, walk, wants, scan_member, version)
    fmt = "nemo" if kind == "tar" and name.lower().endswith(".nemo") else kind
    archive = _Archive(FormatReport(fmt), walk, scan_member)
    archive.report.info["container"] = kind
    if walk.depth > walk.limits.max_depth:
        archive.report.suspicious("", f"archive nested deeper than {walk.limits.max_depth} levels: not examined")
    elif kind == "zip":
        archive.zip(path, wants)
    else:
        archive.tar(path, wants)
    archive.report.info["members"] = archive.members
    archive.report.info["judged"] = archive.judged
    return archive.report.result(version)


class _Archive:
    def __init__(self, report: FormatReport, walk: Walk, scan_member: ScanMember) -> None:
        self.report = report
        self.walk = walk
        self.scan_member = scan_member
        self.members = 0
        self.judged: list[dict[str, str]] = []

    def _out_of_time(self) -> bool:
        if time.monotonic() > self.walk.deadline:
            self.report.error("", "time limit exceeded: not every member was examined")
            return True
        return False

    def zip(self, path: Path, wants: Wants) -> None:
        limits = self.walk.limits
        with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                listing = list_members(buf, 0, len(buf), limits.max_zip_members)
            except ZipFormatError as exc:
                if "too many" in str(exc):
                    self.report.error("", f"more than {limits.max_zip_members} members: not examined")
                else:
                    self.report.suspicious("", f"unreadable zip: {exc}")
                return
            for m in listing.members:
                self._check_name(m.name)
                if m.data_offset < 0 or m.name.endswith("/"):
                    continue
                self.members += 1
                if self._out_of_time():
                    return
                try:
                    probe, lo, hi = read_member(buf, m, 1 << 16, self.walk.deadline)
                    try:
                        head = bytes(probe.data[lo:hi])
                    finally:
                        probe.close()
                except ZipFormatError as exc:
                    if wants(b"", m.name):
                        self.report.suspicious(m.name, f"member cannot be examined: {exc}")
                    continue
                if not wants(head, m.name):
                    continue
                self._zip_member(buf, m)

    def _zip_member(self, buf: Any, m: Any) -> None:
        limits = self.walk.limits
        try:
            out, lo, hi = read_member(buf, m, self.walk.remaining, self.walk.deadline,
                                      max_ratio=limits.max_inflate_ratio, ratio_floor=limits.inflate_ratio_floor,
                                      spool_dir=self.walk.spool_dir)
        except ZipFormatError as exc:
            self.report.suspicious(m.name, f"member cannot be examined: {exc}")
            return
        try:
            self.walk.spend(hi - lo)
            if out.bomb:
                self.report.suspicious(m.name, f"zip member {out.bomb}")
            elif not out.complete:
                self.report.error(m.name, "extracted size limit exceeded: member not examined")
            else:
                if out.problem:
                    self.report.suspicious(m.name, out.problem)
                self._judge(m.name, lambda fh: _write_window(fh, out.data, lo, hi))
        finally:
            out.close()

    def tar(self, path: Path, wants: Wants) -> None:
        limits = self.walk.limits
        try:
            with tarfile.open(path, mode="r:") as tar:
                count = 0
                while (m := tar.next()) is not None:
                    count += 1
                    if count > limits.max_zip_members:
                        self.report.error("", f"more than {limits.max_zip_members} members: not all examined")
                        return
                    self._check_name(m.name)
                    if m.issym() or m.islnk():
                        self._check_link(m)
                    if not m.isfile():
                        continue
                    self.members += 1
                    if self._out_of_time():
                        return
                    src = tar.extractfile(m)
                    if src is None:
                        continue
                    head = src.read(1 << 16)
                    if not wants(head, m.name):
                        continue
                    if m.size > self.walk.remaining:
                        self.report.error(m.name, "extracted size limit exceeded: member not examined")
                        continue
                    self.walk.spend(m.size)
                    self._judge(m.name, lambda fh, src=src, head=head, size=m.size: _copy(fh, head, src, size))
        except (tarfile.TarError, OSError, ValueError, EOFError) as exc:
            self.report.suspicious("", f"unreadable tar: {exc}")

    def _check_name(self, member: str) -> None:
        if _escapes(member):
            self.report.unsafe(member, "member path leaves the folder the archive is extracted to")

    def _check_link(self, m: tarfile.TarInfo) -> None:
        target = m.linkname if m.islnk() else posixpath.join(posixpath.dirname(m.name), m.linkname)
        if m.linkname.startswith("/") or _escapes(target):
            self.report.unsafe(m.name, f"link to {m.linkname[:200]!r} leaves the folder the archive is extracted to")

    def _judge(self, member: str, write: Callable[[BinaryIO], None]) -> None:
        """Spool one member to a file named like it and merge the format scanners' verdict on it."""
        folder = tempfile.mkdtemp(prefix="bastion-member-", dir=self.walk.spool_dir)
        try:
            spooled = Path(folder) / _basename(member)
            with spooled.open("wb") as fh:
                write(fh)
            result = self.scan_member(spooled, member, self.walk.deeper())
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        merge(self.report, member, result, self.judged)


def merge(report: FormatReport, member: str, result: ScanResult, judged: list[dict[str, str]]) -> None:
    """A member's findings into its archive's report, located `member: location`; members of no format
    add nothing."""
    fmt = result.details.get("format")
    if fmt is None:
        return
    if len(judged) < MAX_LISTED:
        judged.append({"member": member, "format": fmt, "verdict": result.verdict.value})
    worst = Verdict.SAFE
    for f in result.details.get("findings", []):
        level = Verdict(f["level"])
        worst = level if level.rank > worst.rank else worst
        where = f"{member}: {f['location']}" if f.get("location") else member
        report.add(level, where, f["message"])
    if result.verdict.rank > worst.rank:  # a verdict without a finding (an error, a cut-off list) still counts
        report.add(result.verdict, member, result.summary)


def _compressed(path: Path, name: str, kind: str, walk: Walk, wants: Wants, scan_member: ScanMember,
                version: str) -> ScanResult:
    """A gzip/bz2/xz stream: inflated (bounded) to a file and judged as what it holds, under its name
    without the compression suffix (model.tar.gz -> model.tar)."""
    report = FormatReport(kind)
    report.info["container"] = kind
    if walk.depth > walk.limits.max_depth:
        report.suspicious("", f"archive nested deeper than {walk.limits.max_depth} levels: not examined")
        return report.result(version)
    limits = walk.limits
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        out = bounded_decompress(kind, buf, 0, len(buf), walk.remaining, walk.deadline,
                                 max_ratio=limits.max_inflate_ratio, ratio_floor=limits.inflate_ratio_floor,
                                 spool_dir=walk.spool_dir)
    try:
        walk.spend(len(out.data))
        if out.bomb:
            report.suspicious("", f"{kind} stream {out.bomb}")
            return report.result(version)
        if not out.complete:
            report.error("", f"{kind} stream: extracted size limit exceeded, not examined")
            return report.result(version)
        if out.problem:
            report.suspicious("", f"{kind} stream: {out.problem}")
        inner = _strip_suffix(name)
        folder = tempfile.mkdtemp(prefix="bastion-member-", dir=walk.spool_dir)
        try:
            spooled = Path(folder) / _basename(inner)
            with spooled.open("wb") as dst:
                _write_window(dst, out.data, 0, len(out.data))
            result = scan_member(spooled, inner, walk.deeper())
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        out.close()
    if not report.findings:
        # Transparent: a model.tar.gz is judged as the tar it holds, its members located as in the tar.
        result.details["compression"] = kind
        return result
    merge(report, inner, result, [])
    return report.result(version)


def _write_window(fh: BinaryIO, data: Any, lo: int, hi: int) -> None:
    with memoryview(data) as view:
        for pos in range(lo, hi, _COPY_CHUNK):
            fh.write(view[pos : min(hi, pos + _COPY_CHUNK)])


def _copy(fh: BinaryIO, head: bytes, src: BinaryIO, size: int) -> None:
    fh.write(head)
    left = size - len(head)
    while left > 0:
        chunk = src.read(min(_COPY_CHUNK, left))
        if not chunk:
            raise EOFError("tar member shorter than its header says")
        fh.write(chunk)
        left -= len(chunk)


def _escapes(member: str) -> bool:
    path = member.replace("\\", "/")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        return True
    depth = 0
    for part in path.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _basename(member: str) -> str:
    base = posixpath.basename(member.replace("\\", "/")).replace("\x00", "")[-200:]
    return base if base not in ("", ".", "..") else "member"


def _strip_suffix(name: str) -> str:
    root, ext = os.path.splitext(name)
    replacement = _COMPRESSED_SUFFIXES.get(ext.lower())
    return root + replacement if replacement is not None else name
