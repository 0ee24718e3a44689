"""The NumPy scanner: `.npy` headers read with bounds, `.npz` archives member by member, object arrays' pickles.

An object array is stored as a pickle after its header, which `numpy.load(allow_pickle=True)` unpickles:
that pickle goes to the pickle scanner (`pickles.scan_embedded`), whose verdict the file takes (unsafe
when the pickle is). Headers are parsed like numpy does (`pickles.formats.parse_npy_header`, a literal,
never evaluated) and then checked strictly: the three keys numpy writes, a dtype numpy reads, a shape of
non-negative integers, and array data exactly as long as shape times item size (bytes hidden after the
array are a second payload no loader reads as the array). Archive members are read with the pickle
scanner's bounded zip reader; only object arrays are inflated whole.
"""

from __future__ import annotations

import mmap
import time
from pathlib import Path
from typing import Any

from bastion.scanning.results import ScanResult, Verdict
from bastion.scanning.scanners.format_report import FormatReport
from bastion.scanning.scanners.pickles import ScanLimits, scan_embedded
from bastion.scanning.scanners.pickles.formats import NPY_MAGIC, NpyHeader, parse_npy_header
from bastion.scanning.scanners.pickles.zipread import ZipFormatError, list_members, read_member

NAME = "numpy"
VERSION = "1"
MAX_MEMBERS = 100_000
HEADER_PROBE = (1 << 16) + 16  # the largest header parse_npy_header accepts, and the preamble
MAX_SECONDS = 600.0


def sniff(head: bytes) -> bool:
    """A .npy file, or a zip whose first member is a .npy (what numpy.savez writes)."""
    if head[:6] == NPY_MAGIC:
        return True
    if head[:4] != b"PK\x03\x04" or len(head) < 30:
        return False
    n = int.from_bytes(head[26:28], "little")
    return head[30 : 30 + n].endswith(b".npy")


def scan_path(path: Path) -> ScanResult:
    report = FormatReport(NAME)
    size = path.stat().st_size
    with path.open("rb") as fh:
        if size == 0:
            report.suspicious("", "empty file")
            return report.result(VERSION)
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if buf[:6] == NPY_MAGIC:
                report.format = "npy"
                _array(buf, 0, size, size, path.name, report)
            else:
                report.format = "npz"
                _archive(buf, size, report)
    return report.result(VERSION)


def _array(buf: Any, lo: int, hi: int, stored: int, where: str, report: FormatReport, listed: bool = False,
           ) -> None:
    """One .npy at buf[lo:hi]; `stored`: its full length (a member may be given by its prefix only).
    `listed`: already recorded in the report's info (a member read again whole for its pickle)."""
    try:
        header = parse_npy_header(buf, lo, hi)
    except ValueError as exc:
        report.suspicious(where, f"malformed .npy header: {exc}")
        return
    problem, expected = _check_header(header)
    if problem:
        report.suspicious(where, problem)
        return
    arrays = report.info.setdefault("arrays", [])
    if not listed and len(arrays) < 50:
        arrays.append({"name": where, "descr": str(header.descr)[:200]})
    data = stored - (header.data_offset - lo)
    if not header.has_object:
        if expected is not None and data != expected:
            more = "bytes after the array data, which no loader reads as the array" if data > expected else \
                "array data is truncated"
            report.suspicious(where, f"{more} ({data} bytes stored, shape and dtype need {expected})")
        return
    if not listed:
        report.info["objectArrays"] = report.info.get("objectArrays", 0) + 1
    if hi - lo < stored:
        return  # the caller reads the whole member and comes back
    verdict = scan_embedded(buf, header.data_offset, hi, where)
    if verdict.verdict is not Verdict.SAFE:
        report.add(verdict.verdict, where, f"object array: numpy.load(allow_pickle=True) unpickles it, and the "
                                           f"pickle scanner judges that pickle {verdict.summary}")
    pickles = report.info.setdefault("pickleScans", [])
    if len(pickles) < 20:
        pickles.append({"array": where, "status": verdict.verdict.value, "summary": verdict.summary,
                        "imports": verdict.details.get("imports", [])[:50]})


def _check_header(header: NpyHeader) -> tuple[str | None, int | None]:
    """What is wrong with a parsed header, and how many data bytes it needs (None for object arrays)."""
    import numpy as np
    from numpy.lib import format as npformat

    fields = header.fields or {}
    if set(fields) != {"descr", "fortran_order", "shape"}:
        return f"header keys {sorted(map(str, fields))} are not numpy's (descr, fortran_order, shape)", None
    shape = fields["shape"]
    if not (isinstance(shape, tuple) and all(type(d) is int and d >= 0 for d in shape)) or len(shape) > 64:
        return f"shape {str(shape)[:80]} is not a tuple of non-negative integers", None
    if not isinstance(fields["fortran_order"], bool):
        return "fortran_order is not a boolean", None
    try:
        dtype = npformat.descr_to_dtype(header.descr)
    except (TypeError, ValueError, KeyError, SyntaxError, RecursionError) as exc:
        return f"descr {str(header.descr)[:80]} is not a dtype numpy reads: {exc}", None
    if header.has_object or dtype.hasobject:
        return None, None
    count = 1
    for d in shape:
        count *= d
    return None, count * int(np.dtype(dtype).itemsize)


def _archive(buf: Any, size: int, report: FormatReport) -> None:
    limits = ScanLimits()
    deadline = time.monotonic() + MAX_SECONDS
    try:
        listing = list_members(buf, 0, size, MAX_MEMBERS)
    except ZipFormatError as exc:
        report.suspicious("", f"unreadable .npz archive: {exc}")
        return
    for anomaly in listing.anomalies:
        report.suspicious("", f"zip structure: {anomaly}")
    if not listing.members:
        report.suspicious("", "archive without readable members")
    report.info["members"] = len(listing.members)
    inflated = 0
    for m in listing.members:
        for anomaly in m.anomalies:
            report.suspicious(m.name, f"zip member: {anomaly}")
        if m.data_offset < 0 or not m.name.endswith(".npy"):
            continue  # numpy.load hands other members out as raw bytes, never parses them
        try:
            out, lo, hi = read_member(buf, m, HEADER_PROBE, deadline)
        except ZipFormatError as exc:
            report.suspicious(m.name, f"member cannot be read: {exc}")
            continue
        try:
            objects = report.info.get("objectArrays", 0)
            _array(out.data, lo, hi, m.uncompressed_size, m.name, report)
            needs_pickle_scan = report.info.get("objectArrays", 0) > objects and hi - lo < m.uncompressed_size
        finally:
            out.close()
        if not needs_pickle_scan:
            continue
        remaining = limits.max_decompressed_bytes - inflated
        try:
            out, lo, hi = read_member(buf, m, remaining, deadline, max_ratio=limits.max_inflate_ratio,
                                      ratio_floor=limits.inflate_ratio_floor)
        except ZipFormatError as exc:
            report.suspicious(m.name, f"member cannot be read: {exc}")
            continue
        try:
            if out.bomb or not out.complete:
                report.suspicious(m.name, f"object array not examined whole: {out.bomb or 'size limit reached'}")
                continue
            if out.data is not buf:
                inflated += hi - lo
            _array(out.data, lo, hi, hi - lo, m.name, report, listed=True)
        finally:
            out.close()
